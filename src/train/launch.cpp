#include "moin/train/launch.h"

#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <iomanip>
#include <sstream>
#include <thread>
#include <unordered_set>

#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "moin/core/log.h"
#include "moin/core/process.h"
#include "moin/core/strings.h"
#include "moin/train/partition_layout.h"

namespace moin {

namespace stdfs = std::filesystem;
using json = nlohmann::json;

void LaunchOptions::validate() const {
  require(!partition.empty(), "launch: the partition folder is required (--partition DIR)");
  require(!config.empty(), "launch: the train config is required (--config FILE)");
  require(jobs >= 1, "launch: jobs must be at least 1");
  require(experts_per_job >= 1, "launch: experts_per_job must be at least 1");
  require(retries >= 0, "launch: retries must not be negative");
  require(status_every_s > 0, "launch: status_every_s must be positive");
  require(slurm_options.max_array_size >= 1, "launch: slurm_options.max_array_size must be at least 1");
  for (const auto& s : set)
    require(s.find('=') != std::string::npos, "launch: train override '" + s + "' is not key=value");
}

bool LaunchReport::ok() const {
  for (const auto& j : jobs)
    if (j.status == "failed") return false;
  return true;
}

bool LaunchJob::too_small() const {
  return summary.is_object() && summary.value("status", std::string()) == "too_small";
}

namespace {

// The experts folder: the launch option, else the train config's "output".
std::string resolve_output(const LaunchOptions& o) {
  if (!o.output.empty()) return o.output;
  auto cfg = fs::read_json(o.config);
  if (cfg.contains("output") && cfg["output"].is_string() && !cfg["output"].get<std::string>().empty())
    return cfg["output"].get<std::string>();
  throw UserError("launch: no experts folder: pass --output DIR or set \"output\" in " + o.config);
}

std::string moin_executable(const LaunchOptions& o) {
  if (!o.moin.empty()) return o.moin;
  std::string exe = executable_dir() + "/moin";
  return stdfs::exists(exe) ? exe : std::string(MOIN_BINARY_DIR) + "/moin";
}

std::vector<int> selected_clusters(const LaunchOptions& o) {
  auto all = partition_clusters(o.partition);
  if (o.clusters.empty()) return all;
  for (int k : o.clusters)
    require(k >= 0 && k < static_cast<int>(all.size()),
            "launch: cluster " + std::to_string(k) + " is not in " + o.partition);
  return o.clusters;
}

stdfs::path summary_path(const std::string& out_root, int k) {
  return stdfs::path(out_root) / std::to_string(k) / "summary.json";
}

std::string join_ints(const std::vector<int>& v, const char* sep) {
  std::vector<std::string> parts;
  for (int k : v) parts.push_back(std::to_string(k));
  return join(parts, sep);
}

// The GPUs jobs are spread over, as CUDA_VISIBLE_DEVICES values; empty for CPU jobs.
std::vector<std::string> gpu_slots(const std::string& spec) {
  if (spec == "none") return {};
  if (spec != "auto") {
    std::vector<std::string> out;
    for (auto& g : split(spec, ','))
      if (!g.empty()) out.push_back(g);
    return out;
  }
  int n = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  std::vector<std::string> visible;
  if (const char* env = std::getenv("CUDA_VISIBLE_DEVICES")) visible = split(env, ',');
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i)
    out.push_back(i < static_cast<int>(visible.size()) ? visible[static_cast<std::size_t>(i)] : std::to_string(i));
  return out;
}

std::string absolute(const std::string& p) { return stdfs::absolute(p).lexically_normal().string(); }

// The last line of a job's log that moin's error handler printed ("moin: error: ..." or "moin: failed: ..."):
// the cause of its failure, shown in the table instead of only the log's path.
// The lines of the last `bytes` of a file (the first one may be cut); none when it cannot be read.
std::vector<std::string> tail_lines(const std::string& path, std::int64_t bytes) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::string> lines;
  if (!in) return lines;
  in.seekg(0, std::ios::end);
  in.seekg(std::max<std::int64_t>(0, static_cast<std::int64_t>(in.tellg()) - bytes));
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string last_moin_line(const std::string& log) {
  std::string last;
  for (const auto& line : tail_lines(log, 64 * 1024))
    if (line.rfind("moin: ", 0) == 0) last = line;
  return last;
}

// The step of a running job's first open cluster, from the last line of its metrics.jsonl (-1: none yet).
std::int64_t last_step(const std::string& metrics) {
  std::int64_t step = -1;
  for (const auto& line : tail_lines(metrics, 4096)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer()) step = j["step"].get<std::int64_t>();
  }
  return step;
}

}  // namespace

std::vector<std::string> train_argv(const LaunchOptions& o, const std::string& exe, const std::string& out_root,
                                    const std::string& clusters) {
  std::vector<std::string> argv = {exe, "train", "--mode", "expert", "--config", o.config, "--partition", o.partition};
  if (!o.base.empty()) argv.insert(argv.end(), {"--base", o.base});
  if (o.experts_per_job == 1) {  // one expert per job: the command line of a single `moin train`, unchanged
    argv.insert(argv.end(), {"--cluster", clusters, "--output", (stdfs::path(out_root) / clusters).string()});
  } else {
    argv.insert(argv.end(), {"--clusters", clusters, "--output", out_root});
  }
  argv.push_back("--resume");
  for (const auto& s : o.set) {
    argv.push_back("--set");
    argv.push_back(s);
  }
  return argv;
}

std::vector<std::vector<int>> chunk_clusters(const std::vector<int>& clusters, int n) {
  require(n >= 1, "launch: experts per job must be at least 1");
  std::vector<std::vector<int>> out;
  for (std::size_t i = 0; i < clusters.size(); i += static_cast<std::size_t>(n))
    out.emplace_back(clusters.begin() + static_cast<std::ptrdiff_t>(i),
                     clusters.begin() + static_cast<std::ptrdiff_t>(std::min(clusters.size(), i + static_cast<std::size_t>(n))));
  return out;
}

std::string array_ranges(std::vector<int> ids) {
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  std::vector<std::string> parts;
  for (std::size_t i = 0; i < ids.size();) {
    std::size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    parts.push_back(j == i ? std::to_string(ids[i]) : std::to_string(ids[i]) + "-" + std::to_string(ids[j]));
    i = j + 1;
  }
  return join(parts, ",");
}

SlurmPlan slurm_plan(const LaunchOptions& o, const std::vector<int>& clusters, const std::vector<int>& finished) {
  SlurmPlan plan;
  plan.tasks = chunk_clusters(clusters, o.experts_per_job);
  const std::unordered_set<int> done(finished.begin(), finished.end());
  const int m = o.slurm_options.max_array_size;
  const std::string throttle = o.slurm_options.max_parallel > 0 ? "%" + std::to_string(o.slurm_options.max_parallel) : "";
  for (int offset = 0; offset < static_cast<int>(plan.tasks.size()); offset += m) {
    SlurmArray a;
    a.offset = offset;
    for (int i = offset; i < std::min(offset + m, static_cast<int>(plan.tasks.size())); ++i) {
      bool open = false;
      for (int k : plan.tasks[static_cast<std::size_t>(i)])
        open = open || done.count(k) == 0;
      if (open) a.task_ids.push_back(i - offset);
    }
    if (a.task_ids.empty()) continue;
    a.spec = array_ranges(a.task_ids) + throttle;
    plan.arrays.push_back(a);
  }
  return plan;
}

std::string submit_script_path(const std::string& job_script) {
  stdfs::path p(job_script);
  return (p.parent_path() / (p.stem().string() + ".submit.sh")).string();
}

std::string slurm_script(const LaunchOptions& o, const SlurmPlan& plan) {
  require(!plan.arrays.empty(), "launch: no Slurm array to write (every cluster is finished)");
  const std::string out_root = absolute(resolve_output(o));
  const std::string file = absolute(o.slurm);
  const auto& s = o.slurm_options;
  const SlurmArray& first = plan.arrays.front();
  std::ostringstream sh;
  sh << "#!/bin/bash\n";
  sh << "# Generated by `moin launch --slurm`: " << plan.tasks.size() << " tasks of up to " << o.experts_per_job
     << " cluster(s) each (TASKS below), " << plan.arrays.size() << " job array(s) of at most " << s.max_array_size
     << " tasks to submit.\n";
  sh << "# Submit every array with: bash " << shell_quote(absolute(submit_script_path(o.slurm))) << "\n";
  if (plan.arrays.size() == 1)
    sh << "# (the same as: sbatch " << shell_quote(file) << ")\n";
  else
    sh << "# (sbatch " << shell_quote(file) << " alone submits only the first array, tasks " << first.offset << "..)\n";
  sh << "# Task i = MOIN_TASK_OFFSET + SLURM_ARRAY_TASK_ID trains the clusters of TASKS[i] that have no summary.json.\n";
  sh << "#SBATCH --job-name=" << s.job_name << "\n";
  sh << "#SBATCH --array=" << first.spec << "\n";
  if (s.gpus_per_task > 0) sh << "#SBATCH --gres=gpu:" << s.gpus_per_task << "\n";
  sh << "#SBATCH --cpus-per-task=" << s.cpus_per_task << "\n";
  sh << "#SBATCH --ntasks=1\n";
  sh << "#SBATCH --time=" << s.time << "\n";
  if (!s.partition.empty()) sh << "#SBATCH --partition=" << s.partition << "\n";
  if (!s.account.empty()) sh << "#SBATCH --account=" << s.account << "\n";
  if (!s.mem.empty()) sh << "#SBATCH --mem=" << s.mem << "\n";
  sh << "#SBATCH --output=" << out_root << "/logs/slurm-%A_%a.log\n";
  for (const auto& e : s.extra) sh << "#SBATCH " << e << "\n";
  sh << "\nset -uo pipefail\n";
  sh << "T=${SLURM_ARRAY_TASK_ID:?run this script with sbatch (a job array)}\n";
  sh << "I=$(( ${MOIN_TASK_OFFSET:-" << first.offset << "} + T ))\n";
  // The list is part of the script, not a file beside it: sbatch keeps a copy of the script, so a queued
  // task runs the list it was submitted with even when the script is written again meanwhile.
  sh << "TASKS=(\n";
  for (std::size_t i = 0; i < plan.tasks.size(); ++i) sh << "  [" << i << "]=" << join_ints(plan.tasks[i], ",") << "\n";
  sh << ")\n";
  sh << "[ -n \"${TASKS[$I]:-}\" ] || { echo \"task $I: not one of the ${#TASKS[@]} tasks of this script\" >&2; exit 1; }\n";
  sh << "OUT=" << shell_quote(out_root) << "\n";
  sh << "K=\"\"  # the task's clusters still to train\n";
  sh << "for c in ${TASKS[$I]//,/ }; do [ -f \"$OUT/$c/summary.json\" ] || K=\"$K${K:+,}$c\"; done\n";
  sh << "if [ -z \"$K\" ]; then echo \"task $I (clusters ${TASKS[$I]}): finished before\"; exit 0; fi\n";
  sh << "echo \"task $I: clusters $K\"\n";
  sh << "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-" << s.cpus_per_task << "}\n";
  LaunchOptions abs = o;
  abs.config = absolute(o.config);
  abs.partition = absolute(o.partition);
  if (!abs.base.empty()) abs.base = absolute(o.base);
  const std::string placeholder = "\x01K\x01";
  std::string cmd;
  for (const auto& a : train_argv(abs, absolute(moin_executable(o)), out_root, placeholder)) {
    if (a == placeholder) cmd += " \"$K\"";
    else if (a == (stdfs::path(out_root) / placeholder).string()) cmd += " \"$OUT/$K\"";
    else if (a == out_root) cmd += " \"$OUT\"";
    else cmd += " " + shell_quote(a);
  }
  // Retries as the local launcher does them: --resume continues from the last checkpoint.
  sh << "for attempt in $(seq 1 " << o.retries + 1 << "); do\n";
  sh << "  " << cmd.substr(1) << " && exit 0\n";
  sh << "  echo \"task $I (clusters $K): attempt $attempt failed (exit $?)\" >&2\n";
  sh << "done\nexit 1\n";
  return sh.str();
}

std::string slurm_submit_script(const LaunchOptions& o, const SlurmPlan& plan) {
  const std::string file = shell_quote(absolute(o.slurm));
  std::ostringstream sh;
  sh << "#!/bin/bash\n";
  sh << "# Generated by `moin launch --slurm`: submits the " << plan.arrays.size() << " job array(s) of " << file
     << "\n# (at most " << o.slurm_options.max_array_size
     << " tasks each: array task ids must stay below the cluster's MaxArraySize).\n";
  sh << "set -euo pipefail\n";
  for (const auto& a : plan.arrays) {
    std::string range = a.task_ids.size() == 1 ? std::to_string(a.offset + a.task_ids.front())
                                               : std::to_string(a.offset + a.task_ids.front()) + "-" +
                                                     std::to_string(a.offset + a.task_ids.back());
    sh << "job=$(sbatch --parsable --array=" << a.spec << " --export=ALL,MOIN_TASK_OFFSET=" << a.offset << " "
       << file << ")\n";
    sh << "echo \"tasks " << range << " (" << a.task_ids.size() << "): job ${job%%;*}\"\n";
  }
  return sh.str();
}

LaunchReport launch(const LaunchOptions& opts) {
  config::validate(opts);
  LaunchOptions o = opts;
  require(stdfs::exists(o.config), "launch: train config " + o.config + " does not exist");
  const std::string out_root = resolve_output(o);
  const auto clusters = selected_clusters(o);
  fs::FolderLock lock(out_root);  // one launcher per experts folder; each job locks its own subfolder

  LaunchReport report;
  std::vector<int> todo, finished;
  for (int k : clusters) {
    LaunchJob j;
    j.cluster = k;
    j.log = (stdfs::path(out_root) / "logs" / (std::to_string(k) + ".log")).string();
    if (stdfs::exists(summary_path(out_root, k))) {
      j.status = "skipped";
      j.summary = fs::read_json(summary_path(out_root, k));
      finished.push_back(k);
    } else {
      todo.push_back(k);
    }
    report.jobs.push_back(j);
  }

  if (!o.slurm.empty()) {
    if (todo.empty()) {
      spdlog::info("every cluster is finished: no Slurm script written");
      return report;
    }
    const auto plan = slurm_plan(o, clusters, finished);
    fs::ensure_dir((stdfs::path(out_root) / "logs").string());
    const std::string submit = submit_script_path(o.slurm);
    fs::write_atomic(o.slurm, slurm_script(o, plan));
    fs::write_atomic(submit, slurm_submit_script(o, plan));
    for (const auto& f : {o.slurm, submit})
      stdfs::permissions(f, stdfs::perms::owner_exec | stdfs::perms::group_exec, stdfs::perm_options::add);
    std::size_t tasks = 0;
    for (const auto& a : plan.arrays) tasks += a.task_ids.size();
    spdlog::info("wrote {} ({} clusters to train in {} tasks, {} job array(s)) and {}; submit with: bash {}",
                 o.slurm, todo.size(), tasks, plan.arrays.size(), submit, submit);
    report.jobs.clear();
    return report;
  }
  if (todo.empty()) {
    spdlog::info("every cluster is finished already");
    return report;
  }

  fs::ensure_dir((stdfs::path(out_root) / "logs").string());
  const std::string exe = moin_executable(o);
  require(stdfs::exists(exe), "launch: the moin executable " + exe + " does not exist");
  std::vector<std::string> gpus = gpu_slots(o.gpus);
  const bool on_gpu = !gpus.empty();
  const int slots = on_gpu ? static_cast<int>(gpus.size()) : o.jobs;
  std::map<std::string, std::string> cpu_env;
  if (!on_gpu && std::getenv("OMP_NUM_THREADS") == nullptr) {
    unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    cpu_env["OMP_NUM_THREADS"] = std::to_string(std::max(1u, cores / static_cast<unsigned>(slots)));
  }

  // One job per group of experts_per_job clusters still to train; a retry runs its unfinished ones.
  struct Job {
    std::vector<int> clusters;
    std::string log;
    int attempts = 0;
    double seconds = 0.0;
  };
  std::vector<Job> jobs;
  for (auto& chunk : chunk_clusters(todo, o.experts_per_job)) {
    std::string name = chunk.size() == 1 ? std::to_string(chunk.front())
                                         : std::to_string(chunk.front()) + "-" + std::to_string(chunk.back());
    jobs.push_back({chunk, (stdfs::path(out_root) / "logs" / (name + ".log")).string()});
  }
  spdlog::info("launch: {} clusters to train ({} finished) in {} jobs, {} at a time on {}", todo.size(),
               clusters.size() - todo.size(), jobs.size(), slots,
               on_gpu ? "GPUs " + join(gpus, ",") : std::string("the CPU"));

  auto row_of = [&](int k) -> LaunchJob& {
    for (auto& j : report.jobs)
      if (j.cluster == k) return j;
    throw std::logic_error("launch: unknown cluster");
  };
  struct Running {
    std::size_t job;
    int slot;
    ChildProcess child;
    std::chrono::steady_clock::time_point start;
  };
  std::deque<std::size_t> queue;
  for (std::size_t i = 0; i < jobs.size(); ++i) queue.push_back(i);
  std::vector<Running> running;
  std::vector<bool> busy(static_cast<std::size_t>(slots), false);
  const auto launch_start = std::chrono::steady_clock::now();
  auto last_status = launch_start;

  while (!queue.empty() || !running.empty()) {
    for (int s = 0; s < slots && !queue.empty(); ++s) {
      if (busy[static_cast<std::size_t>(s)]) continue;
      Job& job = jobs[queue.front()];
      const std::size_t ji = queue.front();
      queue.pop_front();
      ++job.attempts;
      auto env = cpu_env;
      std::string gpu = on_gpu ? gpus[static_cast<std::size_t>(s)] : "";
      if (on_gpu) env["CUDA_VISIBLE_DEVICES"] = gpu;
      auto argv = train_argv(o, exe, out_root, join_ints(job.clusters, ","));
      {
        std::ofstream log(job.log, std::ios::app);
        log << "# attempt " << job.attempts << ": " << join(argv, " ") << "\n";
      }
      for (int k : job.clusters) {
        row_of(k).gpu = gpu;
        row_of(k).log = job.log;
      }
      spdlog::info("cluster{} {}: started (attempt {}{}), log {}", job.clusters.size() > 1 ? "s" : "",
                   join_ints(job.clusters, ","), job.attempts, on_gpu ? ", GPU " + gpu : std::string(), job.log);
      running.push_back({ji, s, ChildProcess::spawn(argv, env, job.log), std::chrono::steady_clock::now()});
      busy[static_cast<std::size_t>(s)] = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!running.empty() && std::chrono::steady_clock::now() - last_status >= std::chrono::duration<double>(o.status_every_s)) {
      last_status = std::chrono::steady_clock::now();
      std::size_t finished = 0;
      for (int k : todo) finished += stdfs::exists(summary_path(out_root, k));
      std::vector<std::string> parts;
      for (const auto& run : running) {
        const Job& job = jobs[run.job];
        const auto step = last_step((stdfs::path(out_root) / std::to_string(job.clusters.front()) / "metrics.jsonl").string());
        const std::string which = job.clusters.size() == 1 ? "cluster " + std::to_string(job.clusters.front())
                                                           : "clusters " + std::to_string(job.clusters.front()) + "-" +
                                                                 std::to_string(job.clusters.back());
        parts.push_back(which + (step < 0 ? " starting" : " at step " + std::to_string(step)));
      }
      spdlog::info("launch: {} of {} clusters finished, {} ({})", finished, todo.size(), join(parts, ", "),
                   human_duration(std::chrono::duration<double>(std::chrono::steady_clock::now() - launch_start).count()));
    }
    for (std::size_t i = 0; i < running.size();) {
      auto rc = running[i].child.poll();
      if (!rc) {
        ++i;
        continue;
      }
      Job& job = jobs[running[i].job];
      job.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - running[i].start).count();
      // An expert is done when its summary.json exists, whatever the exit code of the job that ran it.
      std::vector<int> open;
      for (int k : job.clusters) {
        LaunchJob& r = row_of(k);
        r.exit_code = *rc;
        r.attempts = job.attempts;
        r.seconds = job.seconds;
        if (*rc == 0 && stdfs::exists(summary_path(out_root, k))) {
          r.status = "done";
          r.summary = fs::read_json(summary_path(out_root, k));
          spdlog::info("cluster {}: {} in {}", k, r.too_small() ? "no expert (too small)" : "done",
                       human_duration(job.seconds));
        } else if (*rc != 0 && stdfs::exists(summary_path(out_root, k))) {
          r.status = "done";  // finished before its job failed on another cluster
          r.summary = fs::read_json(summary_path(out_root, k));
        } else {
          open.push_back(k);
        }
      }
      // Exit 2 is a user error (a bad flag, config or input): the same command would fail the same way.
      if (!open.empty() && job.attempts <= o.retries && *rc != 2) {
        spdlog::warn("cluster{} {}: failed (exit {}); retrying (see {})", open.size() > 1 ? "s" : "",
                     join_ints(open, ","), *rc, job.log);
        job.clusters = open;
        queue.push_front(running[i].job);
      } else {
        const std::string cause = last_moin_line(job.log);
        for (int k : open) {
          row_of(k).status = "failed";
          row_of(k).error = cause;
          spdlog::error("cluster {}: failed (exit {}) after {} attempt{}{}; see {}", k, *rc, job.attempts,
                        job.attempts > 1 ? "s" : "", cause.empty() ? "" : ": " + cause, job.log);
        }
      }
      busy[static_cast<std::size_t>(running[i].slot)] = false;
      running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
    }
  }
  return report;
}

std::string format_launch_table(const LaunchReport& report) {
  std::ostringstream s;
  auto num = [](const json& j, const char* key, int precision) -> std::string {
    if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return "-";
    std::ostringstream v;
    v << std::fixed << std::setprecision(precision) << j[key].get<double>();
    return v.str();
  };
  s << std::left << std::setw(8) << "cluster" << std::setw(9) << "status" << std::setw(9) << "attempts"
    << std::setw(6) << "exit" << std::setw(10) << "time" << std::setw(12) << "valid loss" << std::setw(12)
    << "(initial)" << "tokens/s\n";
  int failed = 0, too_small = 0;
  for (const auto& j : report.jobs) {
    s << std::left << std::setw(8) << j.cluster << std::setw(9) << j.status << std::setw(9) << j.attempts
      << std::setw(6) << (j.attempts ? std::to_string(j.exit_code) : "-") << std::setw(10)
      << (j.attempts ? human_duration(j.seconds) : "-");
    if (j.too_small())  // finished, but with no adapter: the router sends its documents to the base
      s << "no expert (too small)\n";
    else
      s << std::setw(12) << num(j.summary, "final_valid_loss", 4) << std::setw(12)
        << num(j.summary, "initial_valid_loss", 4) << num(j.summary, "tokens_per_s", 0) << "\n";
    failed += j.status == "failed";
    too_small += j.too_small();
  }
  s << report.jobs.size() << " clusters, " << failed << " failed";
  if (too_small) s << ", " << too_small << " too small for an expert";
  s << "\n";
  for (const auto& j : report.jobs)
    if (j.status == "failed")
      s << "cluster " << j.cluster << " failed" << (j.error.empty() ? "" : ": " + j.error) << " (see " << j.log << ")\n";
  return s.str();
}

}  // namespace moin
