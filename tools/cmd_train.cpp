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
  static bool resume = false;
  auto* o_mode = cmd->add_option("--mode", mode, "expert, dense-lora or full");
  auto* o_part = cmd->add_option("--partition", partition, "partition folder (moin partition's output)");
  auto* o_cluster = cmd->add_option("--cluster", cluster, "cluster to train on (expert mode)");
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
    flag(flags, o_base, "base", base);
    flag(flags, o_out, "output", output);
    flag(flags, o_dev, "device", device);
    auto opts = resolve<TrainOptions>(common, flags);
    fs::FolderLock lock(opts.output);  // one writer per output folder (fs.h)
    log::add_file((std::filesystem::path(opts.output) / "moin.log").string());
    save_effective_config(opts.output, "train", opts);
    auto summary = train(opts, resume);
    std::cout << summary.dump(2) << "\n";
  });
}

}  // namespace moin::cli
