// moin partition [all|fit|assign|merge]: corpus -> clusters -> per-cluster token shards (docs/partition.md).
#include <algorithm>
#include <filesystem>
#include <iostream>

#include "cli.h"
#include "moin/partition/partition.h"

namespace moin::cli {

void register_partition(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "partition",
      "Split a corpus into K clusters (embedder + k-means) and write per-cluster train/valid token shards.\n"
      "STEP: all (default: fit, assign every slice, merge), fit, assign (one slice with --shard), merge.\n"
      "Sharded: `moin partition fit ...`, then `moin partition assign --output DIR --shard I --num-shards N`\n"
      "in N processes, then `moin partition merge --output DIR`. Finished steps are skipped on a re-run.");
  auto& common = add_common(cmd);
  static std::string step = "all";
  static std::vector<std::string> inputs;
  static std::string text_field, label_field, tokenizer, embedder, model_dir, output;
  static int clusters = 0, shard = -1, num_shards = 0;
  static double valid_fraction = 0;
  static bool strict = false;
  cmd->add_option("step", step, "all, fit, assign or merge")
      ->check(CLI::IsMember({"all", "fit", "assign", "merge"}));
  auto* o_in = cmd->add_option("--input", inputs, "corpus files, folders or globs (JSONL, .gz, .zst, text)");
  auto* o_tf = cmd->add_option("--text-field", text_field, "dotted path of the text in each JSON object");
  auto* o_lf = cmd->add_option("--label-field", label_field, "dotted path of a reference label (for the report)");
  auto* o_tok = cmd->add_option("--tokenizer", tokenizer, "SentencePiece .model or tokenizer.json of the base model");
  auto* o_k = cmd->add_option("--clusters", clusters, "number of clusters K");
  auto* o_emb = cmd->add_option("--embedder", embedder, "tfidf, model or encoder");
  auto* o_model = cmd->add_option("--model", model_dir, "base model folder for --embedder model (embedder.model_dir)");
  auto* o_out = cmd->add_option("--output", output, "the partition directory");
  auto* o_shard = cmd->add_option("--shard", shard, "assign only slice I (0-based) of --num-shards");
  auto* o_ns = cmd->add_option("--num-shards", num_shards, "number of corpus slices");
  auto* o_vf = cmd->add_option("--valid-fraction", valid_fraction, "fraction of documents held out for validation");
  auto* o_strict = cmd->add_flag("--strict", strict, "stop at the first bad input line instead of counting it");
  add_reference<PartitionOptions>(cmd);
  set_action(cmd, common, [=, &common] {
    json flags = json::object();
    flag(flags, o_in, "corpus.inputs", inputs);
    flag(flags, o_tf, "corpus.text_field", text_field);
    flag(flags, o_lf, "corpus.label_field", label_field);
    flag(flags, o_tok, "tokenizer", tokenizer);
    flag(flags, o_k, "kmeans.k", clusters);
    flag(flags, o_emb, "embedder.type", embedder);
    flag(flags, o_model, "embedder.model_dir", model_dir);
    flag(flags, o_out, "output", output);
    flag(flags, o_shard, "shard", shard);
    flag(flags, o_ns, "num_shards", num_shards);
    flag(flags, o_vf, "valid_fraction", valid_fraction);
    flag(flags, o_strict, "corpus.strict", strict);
    // A fitted folder supplies the options it was fitted with, so later steps need only --output.
    PartitionOptions defaults;
    if (!output.empty() && std::filesystem::exists(std::filesystem::path(output) / "partition.config.json")) {
      defaults = load_partition_options(output);
      defaults.shard = -1;
      defaults.num_shards = 0;
      defaults.corpus.strict = false;
    }
    auto opts = resolve<PartitionOptions>(common, flags, defaults);
    // One writer per folder; the slices of a sharded assign run side by side, each owning its own slice.
    const bool one_slice = step == "assign" && opts.shard >= 0;
    fs::FolderLock lock = one_slice ? fs::FolderLock(std::filesystem::path(opts.output) / "work",
                                                     "." + partition_slice_dir(opts.shard, std::max(1, opts.num_shards)) + ".lock")
                                    : fs::FolderLock(opts.output);
    PartitionSummary s;
    if (step == "fit") {
      partition_fit(opts);
    } else if (step == "assign") {
      int n = opts.num_shards > 0 ? opts.num_shards : 1;
      if (opts.shard >= 0) partition_assign(opts, opts.shard, n);
      else
        for (int i = 0; i < n; ++i) partition_assign(opts, i, n);
    } else if (step == "merge") {
      s = partition_merge(opts);
    } else {
      s = run_partition(opts);
    }
    if (step == "merge" || (step == "all" && opts.shard < 0)) {
      json j = {{"output", opts.output}, {"clusters", s.clusters}, {"documents", s.documents},
                {"tokens", s.tokens}, {"train_documents", s.train_documents},
                {"valid_documents", s.valid_documents}, {"seconds", s.seconds}};
      if (s.nmi >= 0) {
        j["nmi"] = s.nmi;
        j["purity"] = s.purity;
      }
      if (s.capacity > 0) {
        j["balance_capacity"] = s.capacity;
        j["moved_documents"] = s.moved_documents;
      }
      std::cout << j.dump() << std::endl;
    }
  });
}

}  // namespace moin::cli
