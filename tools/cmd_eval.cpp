// moin eval ppl | routing | nmi: the `eval` command and its routing subcommand (ppl: cmd_eval_ppl.cpp,
// nmi: cmd_eval_metrics.cpp).
#include <iostream>

#include "cli.h"
#include "moin/eval/routing_eval.h"

namespace moin::cli {

void register_eval(CLI::App& app) {
  auto* ev = app.add_subcommand("eval", "Evaluate: perplexity, routing, cluster quality");
  ev->require_subcommand(1);
  register_eval_ppl(ev);
  register_eval_routing(ev);
  register_eval_metrics(ev);
}

void register_eval_routing(CLI::App* ev) {
  auto* cmd = ev->add_subcommand("routing", "Routing accuracy vs prefix length, oracle agreement, purity, speed");
  auto& common = add_common(cmd);
  auto& flags = add_flags<RoutingEvalOptions>(cmd);
  set_action(cmd, common, [&flags, &common] {
    auto opts = resolve<RoutingEvalOptions>(common, flags.given());
    auto lock = lock_report(opts.json, opts.markdown);
    auto r = run_eval_routing(opts);
    if (!opts.json.empty()) save_config_beside(opts.json, "eval_routing", opts);
    std::cout << r.markdown();
  });
}

}  // namespace moin::cli
