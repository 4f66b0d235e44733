// moin init-model: a freshly initialised Llama checkpoint (pre-training from scratch, tests).
#include "cli.h"
#include "moin/model/checkpoint.h"

namespace moin::cli {

void register_init_model(CLI::App& app) {
  auto* cmd = app.add_subcommand("init-model",
                                 "Write a randomly initialised Llama-family model (llama, mistral, qwen2, qwen3; "
                                 "Hugging Face layout)");
  auto& common = add_common(cmd);
  static std::string model_config;
  cmd->add_option("--model-config", model_config,
                  "a Hugging Face config.json giving the architecture (the \"model\" keys; --set model.KEY=V "
                  "still overrides)");
  auto& flags = add_flags<InitModelOptions>(cmd);
  set_action(cmd, common, [&flags, &common] {
    InitModelOptions defaults;
    if (!model_config.empty()) defaults.model = LlamaConfig::load(model_config);
    auto opts = resolve<InitModelOptions>(common, flags.given(), defaults);
    init_model(opts);
    save_effective_config(opts.output, "init-model", opts);
    spdlog::info("wrote {} ({} parameters)", opts.output, opts.model.num_parameters());
  });
}

}  // namespace moin::cli
