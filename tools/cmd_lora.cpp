// moin lora init | merge: a freshly initialised adapter (PEFT layout) for a base model; an adapter folded
// into the base weights, saved as a model.
#include "cli.h"
#include "moin/model/checkpoint.h"
#include "moin/model/llama.h"
#include "moin/model/lora.h"

namespace moin::cli {

void register_lora(CLI::App& app) {
  auto* lora = app.add_subcommand("lora", "Create LoRA adapters (PEFT layout) or merge one into its base model");
  lora->require_subcommand(1);

  {
    auto* cmd = lora->add_subcommand(
        "init", "Write a freshly initialised adapter for a base model (A Kaiming-uniform, B zeros, as PEFT)");
    auto& common = add_common(cmd);
    static std::string model, output;
    static bool random_b = false;
    cmd->add_option("--model", model, "base model folder (config.json); only its shapes are used")->required();
    cmd->add_option("--output", output, "adapter folder to write")->required();
    cmd->add_flag("--random-b", random_b,
                  "also draw B ~ N(0, 0.1^2) (seed + 1), so the adapter changes the model: for checks against "
                  "other tools, not for training");
    auto& flags = add_flags<LoraOptions>(cmd, {{"r", "--rank,-r"}, {"target_modules", "--targets"}});
    set_action(cmd, common, [&flags, &common] {
      auto opts = resolve<LoraOptions>(common, flags.given());
      // Only the projections' shapes matter: the model is built from config.json, its weights never read.
      LlamaForCausalLM base(LlamaConfig::load(model));
      auto adapter = LoraAdapter::create(base->linears(), opts, {torch::Device(torch::kCPU), torch::kFloat32});
      if (random_b) adapter.randomize_b(opts.seed + 1);
      adapter.save(output, model);
      save_effective_config(output, "lora", opts);
      spdlog::info("wrote {}: {} projections, {} parameters, r={}, scaling {}", output, adapter.modules().size(),
                   adapter.num_parameters(), opts.r, adapter.scaling());
    });
  }
  {
    auto* cmd = lora->add_subcommand("merge", "Fold an adapter into the base weights (W += s B A) and save the model");
    auto& common = add_common(cmd);
    static std::string model, adapter_dir, output, dtype = "float32";
    cmd->add_option("--model", model, "base model folder")->required();
    cmd->add_option("--adapter", adapter_dir, "adapter folder (PEFT layout)")->required();
    cmd->add_option("--output", output, "folder of the merged model (config.json + model.safetensors)")->required();
    cmd->add_option("--dtype", dtype, "dtype of the merged model: float32, bfloat16 or float16")->capture_default_str();
    set_action(cmd, common, [] {
      require(!fs::is_within(output, model) && !fs::is_within(output, adapter_dir),
              "lora merge: --output must lie outside --model and --adapter (the base model and the adapter stay as "
              "they are)");
      auto base = load_llama(model, parse_dtype(dtype));
      auto linears = base->linears();
      auto adapter = LoraAdapter::load(adapter_dir, linears);
      adapter.merge(linears);
      save_llama(base, output);
      // The merged model is a model folder like the base: its tokenizer comes along (as `convert` writes one),
      // so generate and eval find it there.
      for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}) {
        const auto from = std::filesystem::path(model) / name;
        if (std::filesystem::is_regular_file(from))
          fs::write_atomic(std::filesystem::path(output) / name, fs::read_text(from));
      }
      spdlog::info("wrote {}: {} merged into {}", output, adapter_dir, model);
    });
  }
}

}  // namespace moin::cli
