// moin eval ppl
#include <iostream>

#include "cli.h"
#include "moin/eval/perplexity.h"

namespace moin::cli {

void register_eval_ppl(CLI::App* ev) {
  {
    auto* cmd = ev->add_subcommand(
        "ppl", "Held-out perplexity: base, continued pre-training, dense LoRA, MoIN (routed), random expert, oracle");
    auto& common = add_common(cmd);
    static std::string data, base, partition, experts, dense, cpt, tokenizer, json_out, md_out, device;
    static int prefix = 0, max_tokens = 0;
    static std::int64_t max_docs = 0;
    auto* o_data = cmd->add_option("--data", data, "held-out JSONL");
    auto* o_base = cmd->add_option("--base", base, "base model folder");
    auto* o_part = cmd->add_option("--partition", partition, "partition directory (router)");
    auto* o_exp = cmd->add_option("--experts", experts, "experts folder (EXPERTS/<k>/)");
    auto* o_dense = cmd->add_option("--dense", dense, "dense LoRA adapter folder");
    auto* o_cpt = cmd->add_option("--cpt", cpt, "continued-pre-training model folder");
    auto* o_tok = cmd->add_option("--tokenizer", tokenizer, "SentencePiece .model or tokenizer.json (default: the partition's)");
    auto* o_pre = cmd->add_option("--prefix-tokens", prefix, "tokens the router sees");
    auto* o_max = cmd->add_option("--max-tokens", max_tokens, "tokens read per document");
    auto* o_docs = cmd->add_option("--max-docs", max_docs, "documents evaluated at most");
    auto* o_dev = cmd->add_option("--device", device, "cpu, cuda, auto");
    auto* o_json = cmd->add_option("--json", json_out, "write the report as JSON");
    auto* o_md = cmd->add_option("--markdown", md_out, "write the tables as Markdown");
    add_reference<PplOptions>(cmd);
    set_action(cmd, common, [=, &common] {
      json flags;
      flag(flags, o_data, "data", data);
      flag(flags, o_base, "base", base);
      flag(flags, o_part, "partition", partition);
      flag(flags, o_exp, "experts", experts);
      flag(flags, o_dense, "dense", dense);
      flag(flags, o_cpt, "cpt", cpt);
      flag(flags, o_tok, "tokenizer", tokenizer);
      flag(flags, o_pre, "prefix_tokens", prefix);
      flag(flags, o_max, "max_tokens", max_tokens);
      flag(flags, o_docs, "max_docs", max_docs);
      flag(flags, o_dev, "device", device);
      flag(flags, o_json, "json", json_out);
      flag(flags, o_md, "markdown", md_out);
      auto opts = resolve<PplOptions>(common, flags);
      auto r = run_eval_ppl(opts);
      if (!opts.json.empty())
        save_effective_config(std::filesystem::path(opts.json).parent_path().empty()
                                  ? "."
                                  : std::filesystem::path(opts.json).parent_path().string(),
                              "eval_ppl", opts);
      std::cout << r.markdown();
    });
  }
}

}  // namespace moin::cli
