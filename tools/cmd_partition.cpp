// moin partition [all|fit|assign|merge]: corpus -> clusters -> per-cluster token shards (docs/partition.md).
#include <algorithm>
#include <filesystem>
#include <iostream>

#include "cli.h"
#include "moin/partition/layout.h"
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
  cmd->add_option("step", step, "all, fit, assign or merge")
      ->check(CLI::IsMember({"all", "fit", "assign", "merge"}));
  auto& partition_flags = add_flags<PartitionOptions>(cmd, {{"corpus.inputs", "--input"},
                                                            {"corpus.text_field", "--text-field"},
                                                            {"corpus.label_field", "--label-field"},
                                                            {"corpus.strict", "--strict"},
                                                            {"kmeans.k", "--clusters"},
                                                            {"embedder.type", "--embedder"},
                                                            {"embedder.model_dir", "--model"},
                                                            {"embedder.encoder_dir", "--encoder"}});
  set_action(cmd, common, [&partition_flags, &common] {
    json flags = partition_flags.given();
    const std::string output = flags.value("output", std::string());
    // A fitted folder supplies the options it was fitted with, so later steps need only --output.
    PartitionOptions defaults;
    if (!output.empty() && std::filesystem::exists(PartitionLayout(output).config_file())) {
      defaults = load_partition_options(output);
      defaults.shard = -1;
      defaults.num_shards = 0;
      defaults.corpus.strict = false;
    }
    auto opts = resolve<PartitionOptions>(common, flags, defaults);
    check_partition_output(opts);
    // One writer per folder; the slices of a sharded assign run side by side, each owning its own slice.
    const bool one_slice = step == "assign" && opts.shard >= 0;
    fs::FolderLock lock = one_slice ? fs::FolderLock(PartitionLayout(opts.output).work_dir(),
                                                     "." + PartitionLayout::slice_name(opts.shard, std::max(1, opts.num_shards)) + ".lock")
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
