// moin config: print the default configuration of a stage (a starting point for --config files).
#include <functional>
#include <iostream>

#include "cli.h"
#include "moin/data/tokenizer.h"
#include "moin/eval/perplexity.h"
#include "moin/eval/routing_eval.h"
#include "moin/model/checkpoint.h"
#include "moin/model/generate.h"
#include "moin/model/llama2c.h"
#include "moin/model/lora.h"
#include "moin/partition/partition.h"
#include "moin/run/pipeline.h"
#include "moin/train/launch.h"
#include "moin/train/options.h"

namespace moin::cli {

#define STAGES "tokenizer, generate, init-model, convert, lora, train, launch, partition, eval-ppl, eval-routing, run"

// Each stage's options struct, by the name used in `moin config NAME`.
static json default_config(const std::string& name) {
  if (name == "tokenizer") return config::to_json(TokenizerTrainOptions{});
  if (name == "generate") return config::to_json(GenerateRunOptions{});
  if (name == "init-model") return config::to_json(InitModelOptions{});
  if (name == "convert") return config::to_json(Llama2cConvertOptions{});
  if (name == "lora") return config::to_json(LoraOptions{});
  if (name == "train") return config::to_json(TrainOptions{});
  if (name == "launch") return config::to_json(LaunchOptions{});
  if (name == "partition") return config::to_json(PartitionOptions{});
  if (name == "eval-ppl") return config::to_json(PplOptions{});
  if (name == "eval-routing") return config::to_json(RoutingEvalOptions{});
  if (name == "run") return config::to_json(RunOptions{});
  throw UserError("config: unknown stage '" + name + "'; known: " STAGES);
}

void register_config(CLI::App& app) {
  auto* cmd = app.add_subcommand("config", "Print the default JSON config of a stage");
  auto& common = add_common(cmd);
  static std::string stage;
  cmd->add_option("stage", stage, "stage name: " STAGES)->required();
  set_action(cmd, common, [] {
    // The fault_* keys exist for the fault tests; a starting-point config has no use for them.
    std::function<void(json&)> drop_test_keys = [&](json& j) {
      if (!j.is_object()) return;
      for (auto it = j.begin(); it != j.end();) {
        if (it.key().rfind("fault_", 0) == 0) {
          it = j.erase(it);
        } else {
          drop_test_keys(it.value());
          ++it;
        }
      }
    };
    json j = default_config(stage);
    drop_test_keys(j);
    std::cout << j.dump(2) << "\n";
  });
}

}  // namespace moin::cli
