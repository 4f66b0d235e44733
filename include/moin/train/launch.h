// The launcher (`moin launch`): every cluster's expert trained by a `moin train` process.
//
// The clusters still to train are grouped into jobs of `experts_per_job` clusters. Jobs run one per GPU at
// a time (CUDA_VISIBLE_DEVICES names the GPU) when there are GPUs, else `jobs` CPU jobs at a time
// (OMP_NUM_THREADS shares the cores among them). A job of one cluster is
//   moin train --mode expert --config CONFIG --partition P --cluster K --output OUT/K --resume [--set ...]
// with its output in OUT/logs/K.log; a job of several is
//   moin train --mode expert --config CONFIG --partition P --clusters K1,K2,.. --output OUT --resume [...]
// with its output in OUT/logs/K1-Kn.log (first and last cluster). A cluster whose OUT/K/summary.json
// exists is finished and skipped (that includes a cluster too small for an expert: its summary says
// "status": "too_small"); a failed job is run again `retries` times, for its unfinished clusters only,
// resuming from their last checkpoints.
//
// With `slurm` set, nothing runs: a Slurm job script and a submit script are written instead
// (slurm_plan, slurm_script, slurm_submit_script; docs/train.md).
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
  int max_array_size = 1000;
  std::vector<std::string> extra;

  template <class V> void visit(V& v) {
    v("job_name", job_name, "Slurm job name (--job-name)");
    v("partition", partition, "Slurm partition (--partition; empty: the cluster's default)");
    v("account", account, "Slurm account (--account; empty: none)");
    v("time", time, "time limit of each task (--time)");
    v("gpus_per_task", gpus_per_task, "GPUs per task (--gres=gpu:N; 0 for CPU-only tasks)");
    v("cpus_per_task", cpus_per_task, "CPU cores per task (--cpus-per-task)");
    v("mem", mem, "memory per task (--mem, e.g. 64G; empty: the cluster's default)");
    v("max_parallel", max_parallel, "tasks running at once in each job array (the %N of --array; 0: no limit)");
    v("max_array_size", max_array_size,
      "tasks per job array; array task ids run 0..N-1, so N must be below the cluster's MaxArraySize "
      "(Slurm's default 1001)");
    v("extra", extra, "more #SBATCH lines, verbatim (e.g. \"--qos=high\")");
  }
};

struct LaunchOptions {
  std::string partition;
  std::string config;
  std::string output;
  std::string base;
  std::vector<std::string> set;
  std::vector<int> clusters;
  int experts_per_job = 1;
  int jobs = 1;
  std::string gpus = "auto";
  int retries = 1;
  double status_every_s = 30.0;
  std::string moin;
  std::string slurm;
  SlurmOptions slurm_options;

  template <class V> void visit(V& v) {
    v("partition", partition, "partition folder whose clusters get an expert each");
    v("config", config, "train config (JSON) every job uses (moin config train prints the defaults)");
    v("output", output, "experts folder: cluster K's expert goes to OUTPUT/K (empty: the train config's output)");
    v("base", base, "base model folder every job trains its expert on (empty: the train config's \"base\")");
    v("set", set, "train config overrides passed to every job (\"key=value\", as --set)");
    v("clusters", clusters, "only these clusters (empty: all of the partition's)");
    v("experts_per_job", experts_per_job,
      "clusters trained by one job (one `moin train --clusters` process, or one Slurm array task)");
    v("jobs", jobs, "CPU jobs at a time when no GPU is used");
    v("gpus", gpus, "auto (every visible GPU, none without CUDA), none, or a list like \"0,1,3\"");
    v("retries", retries, "times a failed job is run again (resuming from its last checkpoint)");
    v("status_every_s", status_every_s, "seconds between the status lines of running jobs (each one's step), so a "
                                        "pack that trains for hours shows its progress");
    v("moin", moin, "the moin executable the jobs run (empty: this one)");
    v("slurm", slurm,
      "write a Slurm job script here (job arrays, one task per job) and a submit script next to it, instead of "
      "running");
    v("slurm_options", slurm_options, "the #SBATCH settings of that script");
  }
  void validate() const;
};

// One expert's row of the report. Attempts, exit code, time, GPU and log are those of the job that trained it.
struct LaunchJob {
  int cluster = 0;
  std::string status;  // "done", "skipped" (finished before), "failed"
  int attempts = 0;
  int exit_code = 0;
  double seconds = 0.0;
  std::string gpu;   // CUDA_VISIBLE_DEVICES of the last attempt ("" on CPU)
  nlohmann::json summary;  // the job's summary.json, when it finished
  std::string log;   // its job's log file
  std::string error; // a failed job's last "moin: ..." line (its cause, as the job printed it)
  // Finished without an adapter: the cluster had too few tokens and routes to the base.
  bool too_small() const;
};

struct LaunchReport {
  std::vector<LaunchJob> jobs;
  bool ok() const;
};

// Runs the jobs (or, with opts.slurm, writes the script and returns an empty report).
LaunchReport launch(const LaunchOptions& opts);

// The clusters in groups of n, in order (the last group may be smaller).
std::vector<std::vector<int>> chunk_clusters(const std::vector<int>& clusters, int n);

// Sorted ids as Slurm's --array ranges: {0,1,2,3,7,9,10} -> "0-3,7,9-10".
std::string array_ranges(std::vector<int> ids);

// The Slurm plan. Task i trains tasks[i]: the selected clusters in groups of experts_per_job, unfinished or
// not, so that a task keeps its id (and its log's name) when the script is written again after part of the
// work is done. The tasks with an unfinished cluster are submitted as job arrays of at most
// max_array_size tasks: array a holds the tasks offset .. offset + max_array_size - 1 as array task ids
// 0 .. max_array_size - 1 (Slurm refuses ids at or above MaxArraySize), the finished ones left out.
struct SlurmArray {
  int offset = 0;             // task id = offset + SLURM_ARRAY_TASK_ID
  std::vector<int> task_ids;  // array task ids (relative to offset) still to run
  std::string spec;           // --array value: compressed ranges and the %max_parallel throttle
};
struct SlurmPlan {
  std::vector<std::vector<int>> tasks;
  std::vector<SlurmArray> arrays;
};
SlurmPlan slurm_plan(const LaunchOptions& opts, const std::vector<int>& clusters, const std::vector<int>& finished);

// The job script: #SBATCH settings (the first array's --array), the task list, and the train command of a
// task for its unfinished clusters. `sbatch FILE` submits the first array.
std::string slurm_script(const LaunchOptions& opts, const SlurmPlan& plan);

// The submit script, written next to the job script as submit_script_path(opts.slurm): one
// `sbatch --array=SPEC --export=ALL,MOIN_TASK_OFFSET=OFFSET FILE` per array, each printing its job id.
std::string slurm_submit_script(const LaunchOptions& opts, const SlurmPlan& plan);
std::string submit_script_path(const std::string& job_script);

// The train command line of one job (see the header comment); `clusters` as text, so that the Slurm script
// can pass a shell variable.
std::vector<std::string> train_argv(const LaunchOptions& opts, const std::string& exe, const std::string& out_root,
                                    const std::string& clusters);

// The summary table printed after a launch: cluster, status, attempts, time, valid loss, tokens/s (or "no
// expert (too small)").
std::string format_launch_table(const LaunchReport& report);

}  // namespace moin
