// moin eval ppl
#include <iostream>

#include "cli.h"
#include "moin/eval/perplexity.h"

namespace moin::cli {

void register_eval_ppl(CLI::App* ev) {
  {
    auto* cmd = ev->add_subcommand(
        "ppl", "Held-out perplexity: base, continued pre-training, dense LoRA, MoIN (routed), random expert, oracle, c-BTM, "
        "Arrow, a learned mixture, PEER");
    auto& common = add_common(cmd);
    auto& flags = add_flags<PplOptions>(cmd);
    set_action(cmd, common, [&flags, &common] {
      auto opts = resolve<PplOptions>(common, flags.given());
      auto lock = lock_report(opts.json, opts.markdown);
      auto r = run_eval_ppl(opts);
      if (!opts.json.empty()) save_config_beside(opts.json, "eval_ppl", opts);
      std::cout << r.markdown();
    });
  }
}

}  // namespace moin::cli
