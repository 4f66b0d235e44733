// The launcher (`moin launch`): every cluster's expert trained by its own `moin train` process.
//
// Jobs run one per GPU at a time (CUDA_VISIBLE_DEVICES names the GPU) when there are GPUs, else `jobs`
// CPU jobs at a time (OMP_NUM_THREADS shares the cores among them). Each job is
//   moin train --mode expert --config CONFIG --partition P --cluster K --output OUT/K --resume [--set ...]
// with its output in OUT/logs/K.log. A cluster whose OUT/K/summary.json exists is finished and skipped; a
// failed job is run again `retries` times (resuming from its last checkpoint). With `slurm` set, nothing
// runs: an sbatch script for a Slurm job array (one task per unfinished cluster, SLURM_ARRAY_TASK_ID as
// the cluster) is written instead.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "moin/core/config.h"

namespace moin {

struct SlurmOptions {
  std::string job_name = "moin-experts";
  std::string partition;
  std::string account;
  std::string time = "24:00:00";
  int gpus_per_task = 1;
  int cpus_per_task = 8;
  std::string mem;
  int max_parallel = 0;
  std::vector<std::string> extra;

  template <class V> void visit(V& v) {
    v("job_name", job_name, "Slurm job name (--job-name)");
    v("partition", partition, "Slurm partition (--partition; empty: the cluster's default)");
    v("account", account, "Slurm account (--account; empty: none)");
    v("time", time, "time limit of each task (--time)");
    v("gpus_per_task", gpus_per_task, "GPUs per task (--gres=gpu:N; 0 for CPU-only tasks)");
    v("cpus_per_task", cpus_per_task, "CPU cores per task (--cpus-per-task)");
    v("mem", mem, "memory per task (--mem, e.g. 64G; empty: the cluster's default)");
    v("max_parallel", max_parallel, "tasks running at once (the %N of --array; 0: no limit)");
    v("extra", extra, "more #SBATCH lines, verbatim (e.g. \"--qos=high\")");
  }
};

struct LaunchOptions {
  std::string partition;
  std::string config;
  std::string output;
  std::vector<std::string> set;
  std::vector<int> clusters;
  int jobs = 1;
  std::string gpus = "auto";
  int retries = 1;
  std::string moin;
  std::string slurm;
  SlurmOptions slurm_options;

  template <class V> void visit(V& v) {
    v("partition", partition, "partition folder whose clusters get an expert each");
    v("config", config, "train config (JSON) every job uses (moin config train prints the defaults)");
    v("output", output, "experts folder: cluster K's expert goes to OUTPUT/K (empty: the train config's output)");
    v("set", set, "train config overrides passed to every job (\"key=value\", as --set)");
    v("clusters", clusters, "only these clusters (empty: all of the partition's)");
    v("jobs", jobs, "CPU jobs at a time when no GPU is used");
    v("gpus", gpus, "auto (every visible GPU, none without CUDA), none, or a list like \"0,1,3\"");
    v("retries", retries, "times a failed job is run again (resuming from its last checkpoint)");
    v("moin", moin, "the moin executable the jobs run (empty: this one)");
    v("slurm", slurm, "write an sbatch script (a job array, one task per cluster) here instead of running");
    v("slurm_options", slurm_options, "the #SBATCH settings of that script");
  }
  void validate() const;
};

struct LaunchJob {
  int cluster = 0;
  std::string status;  // "done", "skipped" (finished before), "failed"
  int attempts = 0;
  int exit_code = 0;
  double seconds = 0.0;
  std::string gpu;   // CUDA_VISIBLE_DEVICES of the last attempt ("" on CPU)
  nlohmann::json summary;  // the job's summary.json, when it finished
  std::string log;   // its log file
};

struct LaunchReport {
  std::vector<LaunchJob> jobs;
  bool ok() const;
};

// Runs the jobs (or, with opts.slurm, writes the script and returns an empty report).
LaunchReport launch(const LaunchOptions& opts);

// The sbatch script for these options and the clusters still to train (see the header comment).
std::string slurm_script(const LaunchOptions& opts, const std::vector<int>& clusters);

// The summary table printed after a launch: cluster, status, attempts, time, valid loss, tokens/s.
std::string format_launch_table(const LaunchReport& report);

}  // namespace moin
