// moin train: one training run (an expert, the dense-LoRA baseline, full training, or a mixture of the
// experts). See train/trainer.h.
#include <iostream>

#include "cli.h"
#include "moin/train/trainer.h"

namespace moin::cli {

void register_train(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "train", "Train an expert (LoRA on one cluster), the dense-LoRA baseline, every parameter (full), or a "
      "learned token-level mixture of the experts (mixture)");
  auto& common = add_common(cmd);
  static bool resume = false;
  cmd->add_flag("--resume", resume, "continue from the newest checkpoint in OUTPUT/checkpoints (if any)");
  auto& flags = add_flags<TrainOptions>(cmd);
  set_action(cmd, common, [&flags, &common] {
    auto opts = resolve<TrainOptions>(common, flags.given());
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
