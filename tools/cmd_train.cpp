// moin train: one training run (an expert, the dense-LoRA baseline, or full training). See train/trainer.h.
#include <iostream>

#include "cli.h"
#include "moin/train/trainer.h"

namespace moin::cli {

void register_train(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "train", "Train an expert (LoRA on one cluster), the dense-LoRA baseline, or every parameter (full)");
  auto& common = add_common(cmd);
  static std::string mode, partition, base, output, device;
  static int cluster = -1;
  static std::vector<int> clusters;
  static bool resume = false;
  auto* o_mode = cmd->add_option("--mode", mode, "expert, dense-lora or full");
  auto* o_part = cmd->add_option("--partition", partition, "partition folder (moin partition's output)");
  auto* o_cluster = cmd->add_option("--cluster", cluster, "cluster to train on (expert mode)");
  auto* o_clusters = cmd->add_option("--clusters", clusters, "a pack of clusters trained in one process (expert mode; "
                                                             "expert k goes to OUTPUT/<k>)")
                         ->delimiter(',');
  auto* o_base = cmd->add_option("--base", base, "base model folder (Hugging Face layout)");
  auto* o_out = cmd->add_option("--output", output, "output folder");
  auto* o_dev = cmd->add_option("--device", device, "auto, cpu, cuda or cuda:N");
  cmd->add_flag("--resume", resume, "continue from the newest checkpoint in OUTPUT/checkpoints (if any)");
  add_reference<TrainOptions>(cmd);
  set_action(cmd, common, [=, &common] {
    json flags;
    flag(flags, o_mode, "mode", mode);
    flag(flags, o_part, "partition", partition);
    flag(flags, o_cluster, "cluster", cluster);
    flag(flags, o_clusters, "clusters", clusters);
    flag(flags, o_base, "base", base);
    flag(flags, o_out, "output", output);
    flag(flags, o_dev, "device", device);
    auto opts = resolve<TrainOptions>(common, flags);
    // One writer per output folder (fs.h); a pack locks its experts' folders, so packs share the experts folder.
    std::vector<fs::FolderLock> locks;
    if (opts.clusters.empty()) {
      locks.emplace_back(opts.output);
      log::add_file((std::filesystem::path(opts.output) / "moin.log").string());
      save_effective_config(opts.output, "train", opts);
    } else {
      for (int k : opts.clusters) {
        const auto dir = (std::filesystem::path(opts.output) / std::to_string(k)).string();
        fs::ensure_dir(dir);
        locks.emplace_back(dir);
        save_effective_config(dir, "train", opts);
      }
    }
    auto summary = train(opts, resume);
    std::cout << summary.dump(2) << "\n";
  });
}

}  // namespace moin::cli
