// moin init-model: a freshly initialised Llama checkpoint (pre-training from scratch, tests).
#include "cli.h"
#include "moin/model/checkpoint.h"

namespace moin::cli {

void register_init_model(CLI::App& app) {
  auto* cmd = app.add_subcommand("init-model",
                                 "Write a randomly initialised Llama-family model (llama, mistral, qwen2, qwen3; "
                                 "Hugging Face layout)");
  auto& common = add_common(cmd);
  static std::string output, dtype, model_config, max_shard_size;
  static std::uint64_t seed = 0;
  auto* o_out = cmd->add_option("--output", output, "folder to write (config.json, model.safetensors)");
  auto* o_seed = cmd->add_option("--seed", seed, "seed of the initialisation");
  auto* o_dt = cmd->add_option("--dtype", dtype, "float32, bfloat16 or float16");
  auto* o_shard = cmd->add_option("--max-shard-size", max_shard_size,
                                  "split the weights into Hugging Face shards above this size (5GB, 40KB, ...)");
  cmd->add_option("--model-config", model_config,
                  "a Hugging Face config.json giving the architecture (the \"model\" keys; --set model.KEY=V "
                  "still overrides)");
  add_reference<InitModelOptions>(cmd);
  set_action(cmd, common, [=, &common] {
    json flags;
    flag(flags, o_out, "output", output);
    flag(flags, o_seed, "seed", seed);
    flag(flags, o_dt, "dtype", dtype);
    flag(flags, o_shard, "max_shard_size", max_shard_size);
    InitModelOptions defaults;
    if (!model_config.empty()) defaults.model = LlamaConfig::load(model_config);
    auto opts = resolve<InitModelOptions>(common, flags, defaults);
    init_model(opts);
    save_effective_config(opts.output, "init-model", opts);
    spdlog::info("wrote {} ({} parameters)", opts.output, opts.model.num_parameters());
  });
}

}  // namespace moin::cli
