// moin route: JSONL queries on stdin -> one JSON object per line on stdout, in order: the nearest expert.
#include <iostream>

#include "cli.h"
#include "moin/route/route_stream.h"

namespace moin::cli {

void register_route(CLI::App& app) {
  auto* cmd = app.add_subcommand("route", "Route JSONL queries (stdin) to their nearest expert (stdout, one JSON per line)");
  auto& common = add_common(cmd);
  cmd->footer("\nOutput, one line per input line: {\"expert\": E, \"distance\": D} (with --top-k N > 1 also\n"
              "\"experts\" and \"distances\", nearest first); a line without text gives {\"expert\": -1, \"error\": ...}.\n"
              "distance: 1 - cosine for spherical k-means, squared L2 otherwise.");
  auto& flags = add_flags<RouteStreamOptions>(cmd, {{"router.prefix_tokens", "--prefix-tokens"},
                                                    {"router.top_k", "--top-k"},
                                                    {"router.tokenizer", "--tokenizer"}});
  set_action(cmd, common, [&flags, &common] {
    auto opts = resolve<RouteStreamOptions>(common, flags.given());
    route_jsonl(Router::load(opts.partition, opts.router.tokenizer), opts, std::cin, std::cout);
  });
}

}  // namespace moin::cli
