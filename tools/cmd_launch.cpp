// moin launch: every cluster's expert by `moin train` processes, or a Slurm job script and its submit script.
#include <iostream>

#include "cli.h"
#include "moin/train/launch.h"

namespace moin::cli {

void register_launch(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "launch", "Train every cluster's expert, one process per GPU (or N CPU jobs), or write a Slurm script");
  // --config is the train config the jobs use; the launcher's own keys come from flags and --set.
  auto& common = add_common(cmd);
  auto& launch_flags = add_flags<LaunchOptions>(cmd, {{"set", "--train-set"}});
  set_action(cmd, common, [&launch_flags, &common] {
    json flags = launch_flags.given();
    flags["config"] = common.config;
    Common launch_common = common;
    launch_common.config.clear();
    auto opts = resolve<LaunchOptions>(launch_common, flags);
    auto report = launch(opts);
    if (!opts.slurm.empty() && report.jobs.empty()) {
      std::cout << "wrote " << opts.slurm << "; submit with: bash " << submit_script_path(opts.slurm) << "\n";
      return;
    }
    std::cout << format_launch_table(report);
    if (!report.ok()) throw std::runtime_error("some clusters failed (see the table and their logs)");
  });
}

}  // namespace moin::cli
