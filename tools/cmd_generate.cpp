// moin generate: continue a prompt with a checkpoint (optionally with a LoRA adapter); prints only the
// generated text on stdout.
#include <iostream>

#include "cli.h"
#include "moin/model/generate.h"
#include "moin/route/routed_model.h"

namespace moin::cli {

void register_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt (greedy or temperature/top-p sampling)");
  auto& common = add_common(cmd);
  // Routed generation (MoIN): the router picks the expert from the prompt, its adapter is attached.
  static std::string route, experts;
  static int route_prefix = 0;
  cmd->add_option("--route", route, "partition directory: route the prompt to its nearest expert");
  cmd->add_option("--experts", experts, "with --route: folder of the experts' adapters (EXPERTS/<k>/)");
  cmd->add_option("--route-prefix-tokens", route_prefix, "with --route: route on the prompt's first P tokens (0 = all)");
  auto& flags = add_flags<GenerateRunOptions>(cmd, {{"generation.max_new_tokens", "--max-new-tokens"},
                                                    {"generation.temperature", "--temperature"},
                                                    {"generation.top_p", "--top-p"},
                                                    {"generation.seed", "--seed"}});
  set_action(cmd, common, [&flags, &common] {
    auto opts = resolve<GenerateRunOptions>(common, flags.given());
    if (!route.empty()) {
      require(!experts.empty(), "generate: --route needs --experts");
      require(opts.adapter.empty(), "generate: --route picks the adapter; do not give --adapter too");
      std::cout << run_generate_routed(opts, route, experts, route_prefix) << std::endl;
      return;
    }
    std::cout << run_generate(opts) << std::endl;
  });
}

}  // namespace moin::cli
