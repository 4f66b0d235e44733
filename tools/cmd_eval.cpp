// moin eval ppl | routing
#include <iostream>

#include "cli.h"
#include "moin/eval/routing_eval.h"

namespace moin::cli {

void register_eval(CLI::App& app) {
  // `eval` is shared with the other evaluation commands (eval nmi): whoever registers first creates it.
  CLI::App* ev = nullptr;
  try {
    ev = app.get_subcommand("eval");
  } catch (const CLI::OptionNotFound&) {
    ev = app.add_subcommand("eval", "Evaluate: perplexity, routing, cluster quality");
    ev->require_subcommand(1);
  }
  register_eval_ppl(ev);
  {
    auto* cmd = ev->add_subcommand("routing", "Routing accuracy vs prefix length, oracle agreement, purity, speed");
    auto& common = add_common(cmd);
    static std::string data, partition, tokenizer, ppl_json, json_out, md_out;
    static std::vector<int> prefixes;
    static std::int64_t max_docs = 0;
    auto* o_data = cmd->add_option("--data", data, "JSONL documents");
    auto* o_part = cmd->add_option("--partition", partition, "partition directory (router)");
    auto* o_tok = cmd->add_option("--tokenizer", tokenizer, "SentencePiece .model or tokenizer.json (default: the partition's)");
    auto* o_pre = cmd->add_option("--prefix-tokens", prefixes, "prefix lengths compared (default 16 32 64 128 256)");
    auto* o_docs = cmd->add_option("--max-docs", max_docs, "documents routed at most");
    auto* o_ppl = cmd->add_option("--ppl-json", ppl_json, "an eval ppl report on the same data (oracle agreement)");
    auto* o_json = cmd->add_option("--json", json_out, "write the report as JSON");
    auto* o_md = cmd->add_option("--markdown", md_out, "write the table as Markdown");
    add_reference<RoutingEvalOptions>(cmd);
    set_action(cmd, common, [=, &common] {
      json flags;
      flag(flags, o_data, "data", data);
      flag(flags, o_part, "partition", partition);
      flag(flags, o_tok, "tokenizer", tokenizer);
      flag(flags, o_pre, "prefix_tokens", prefixes);
      flag(flags, o_docs, "max_docs", max_docs);
      flag(flags, o_ppl, "ppl_json", ppl_json);
      flag(flags, o_json, "json", json_out);
      flag(flags, o_md, "markdown", md_out);
      auto opts = resolve<RoutingEvalOptions>(common, flags);
      auto r = run_eval_routing(opts);
      if (!opts.json.empty())
        save_effective_config(std::filesystem::path(opts.json).parent_path().empty()
                                  ? "."
                                  : std::filesystem::path(opts.json).parent_path().string(),
                              "eval_routing", opts);
      std::cout << r.markdown();
    });
  }
}

}  // namespace moin::cli
