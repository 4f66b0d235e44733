// moin route: JSONL queries on stdin -> one JSON object per line on stdout, in order: the nearest expert.
#include <iostream>

#include "cli.h"
#include "moin/eval/perplexity.h"
#include "moin/route/router.h"

namespace moin::cli {

namespace {
struct RouteCommandOptions {
  std::string partition;
  std::string text_field = "text";
  RouterOptions router;
  template <class V> void visit(V& v) {
    v("partition", partition, "partition directory (embedder state, centroids, tokenizer)");
    v("text_field", text_field, "dotted path of the query text in each JSON line");
    v("router", router, "routing options");
  }
  void validate() const {
    require(!partition.empty(), "route: --partition is required");
    router.validate();
  }
};
}  // namespace

void register_route(CLI::App& app) {
  auto* cmd = app.add_subcommand("route", "Route JSONL queries (stdin) to their nearest expert (stdout, one JSON per line)");
  auto& common = add_common(cmd);
  static std::string partition, text_field, tokenizer;
  static int prefix = 0, top_k = 1;
  auto* o_p = cmd->add_option("--partition", partition, "partition directory");
  auto* o_pre = cmd->add_option("--prefix-tokens", prefix, "route on the first P base-tokenizer tokens only");
  auto* o_k = cmd->add_option("--top-k", top_k, "experts per query, nearest first");
  auto* o_f = cmd->add_option("--text-field", text_field, "dotted path of the text in each JSON line");
  auto* o_t = cmd->add_option("--tokenizer", tokenizer, "SentencePiece .model or tokenizer.json for prefixes (default: the partition's)");
  cmd->footer("\nOutput, one line per input line: {\"expert\": E, \"distance\": D} (with --top-k N > 1 also\n"
              "\"experts\" and \"distances\", nearest first); a line without text gives {\"expert\": -1, \"error\": ...}.\n"
              "distance: 1 - cosine for spherical k-means, squared L2 otherwise.");
  add_reference<RouteCommandOptions>(cmd);
  set_action(cmd, common, [=, &common] {
    json flags;
    flag(flags, o_p, "partition", partition);
    flag(flags, o_f, "text_field", text_field);
    flag(flags, o_pre, "router.prefix_tokens", prefix);
    flag(flags, o_k, "router.top_k", top_k);
    flag(flags, o_t, "router.tokenizer", tokenizer);
    auto opts = resolve<RouteCommandOptions>(common, flags);
    auto router = Router::load(opts.partition, opts.router.tokenizer);
    const auto& ro = opts.router;
    std::vector<std::string> batch;
    std::vector<std::string> errors;  // per line of the batch: "" or the problem
    std::int64_t line_no = 0;
    auto flush = [&] {
      std::vector<std::string> texts;
      for (std::size_t i = 0; i < batch.size(); ++i)
        if (errors[i].empty()) texts.push_back(batch[i]);
      auto routes = router.route_prefix(texts, ro.prefix_tokens, ro.top_k, ro.batch_size);
      std::size_t r = 0;
      for (std::size_t i = 0; i < batch.size(); ++i) {
        json out;
        if (!errors[i].empty()) {
          out = {{"expert", -1}, {"error", errors[i]}};
        } else {
          const auto& x = routes[r++];
          out = {{"expert", x.expert()}, {"distance", x.distance()}};
          if (ro.top_k > 1) out.update({{"experts", x.experts}, {"distances", x.distances}});
        }
        std::cout << out.dump() << "\n";
      }
      std::cout.flush();
      batch.clear();
      errors.clear();
    };
    std::string line;
    while (std::getline(std::cin, line)) {
      ++line_no;
      auto j = json::parse(line, nullptr, false);
      std::string text = j.is_discarded() ? "" : json_path_string(j, opts.text_field);
      errors.push_back(j.is_discarded() ? "line " + std::to_string(line_no) + ": not JSON"
                                        : (text.empty() ? "line " + std::to_string(line_no) + ": no text at \"" +
                                                              opts.text_field + "\""
                                                        : ""));
      batch.push_back(std::move(text));
      if (static_cast<int>(batch.size()) >= ro.batch_size) flush();
    }
    flush();
  });
}

}  // namespace moin::cli
