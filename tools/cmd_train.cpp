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
  static bool resume = false, overwrite = false;
  cmd->add_flag("--resume", resume, "continue from the newest checkpoint in OUTPUT/checkpoints (if any); a finished run is left as it is");
  cmd->add_flag("--overwrite", overwrite, "train again from step 0 in an OUTPUT that holds a run (finished or not), replacing it");
  auto& flags = add_flags<TrainOptions>(cmd);
  set_action(cmd, common, [&flags, &common] {
    require(!(resume && overwrite), "train: --resume and --overwrite exclude each other");
    auto opts = resolve<TrainOptions>(common, flags.given());
    check_output_folder(opts);
    // One writer per output folder (fs.h); a pack locks its experts' folders, so packs share the experts folder.
    // A finished run's folder is refused (or, with --resume, left as it is) before anything is written there:
    // its effective config stays the one that produced it.
    std::vector<fs::FolderLock> locks;
    if (opts.clusters.empty()) {
      const bool finished = finished_run(opts.output, resume, overwrite);
      locks.emplace_back(opts.output);
      log::add_file((std::filesystem::path(opts.output) / "moin.log").string());
      if (!finished) save_effective_config(opts.output, "train", opts);
    } else {
      for (int k : opts.clusters) {
        const auto dir = (std::filesystem::path(opts.output) / std::to_string(k)).string();
        const bool finished = finished_run(dir, resume, overwrite);
        fs::ensure_dir(dir);
        locks.emplace_back(dir);
        if (!finished) save_effective_config(dir, "train", opts);
      }
    }
    auto summary = train(opts, resume, overwrite);
    std::cout << summary.dump(2) << "\n";
  });
}

}  // namespace moin::cli
