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
  static std::string partition, output, slurm, gpus, moin_exe;
  static std::vector<std::string> train_sets;
  static std::vector<int> clusters;
  static int jobs = 1, retries = 1, experts_per_job = 1;
  auto* o_part = cmd->add_option("--partition", partition, "partition folder");
  auto* o_out = cmd->add_option("--output", output, "experts folder (default: the train config's output)");
  auto* o_jobs = cmd->add_option("--jobs", jobs, "CPU jobs at a time (when no GPU is used)");
  auto* o_gpus = cmd->add_option("--gpus", gpus, "auto, none, or a list of GPU ids like 0,1,3");
  auto* o_per_job = cmd->add_option("--experts-per-job", experts_per_job, "clusters trained by one job (or Slurm task)");
  auto* o_retries = cmd->add_option("--retries", retries, "times a failed job is run again");
  auto* o_clusters = cmd->add_option("--clusters", clusters, "only these clusters");
  auto* o_tset = cmd->add_option("--train-set", train_sets, "train config override for every job (key=value)");
  auto* o_slurm = cmd->add_option("--slurm", slurm, "write a Slurm job script here (and FILE-stem.submit.sh) instead of running");
  auto* o_moin = cmd->add_option("--moin", moin_exe, "moin executable the jobs run (default: this one)");
  add_reference<LaunchOptions>(cmd);
  set_action(cmd, common, [=, &common] {
    json flags;
    flags["config"] = common.config;
    flag(flags, o_part, "partition", partition);
    flag(flags, o_out, "output", output);
    flag(flags, o_jobs, "jobs", jobs);
    flag(flags, o_gpus, "gpus", gpus);
    flag(flags, o_per_job, "experts_per_job", experts_per_job);
    flag(flags, o_retries, "retries", retries);
    flag(flags, o_clusters, "clusters", clusters);
    flag(flags, o_tset, "set", train_sets);
    flag(flags, o_slurm, "slurm", slurm);
    flag(flags, o_moin, "moin", moin_exe);
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
