// The launcher, with a stand-in for `moin train` (a shell script that records its arguments and
// environment, writes summary.json, or fails), and the non-blocking ChildProcess under it.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "moin/core/fs.h"
#include "moin/core/process.h"
#include "moin/train/launch.h"
#include "test_util.h"
#include "train_fixtures.h"

namespace {

using moin::test::TempDir;
namespace stdfs = std::filesystem;

TEST(ChildProcess, RunsWithEnvironmentAndOutputFile) {
  TempDir dir;
  auto c = moin::ChildProcess::spawn({"/bin/sh", "-c", "echo \"v=$MOIN_TEST_VAR\"; exit 3"},
                                     {{"MOIN_TEST_VAR", "hello"}}, dir / "out.log");
  EXPECT_EQ(c.wait(), 3);
  EXPECT_EQ(c.poll(), 3);
  EXPECT_EQ(moin::test::read_file(dir / "out.log"), "v=hello\n");
}

TEST(ChildProcess, PollDoesNotBlockAndKillEndsIt) {
  auto c = moin::ChildProcess::spawn({"/bin/sleep", "30"});
  EXPECT_FALSE(c.poll().has_value());
  c.kill(9);
  EXPECT_EQ(c.wait(), 128 + 9);
  auto missing = moin::ChildProcess::spawn({"/nonexistent/program"});
  EXPECT_EQ(missing.wait(), 127);
}

// A fake `moin`: appends "cluster=K cuda=... omp=..." to calls.txt; cluster FAIL exits 1, every other
// cluster writes OUTPUT/summary.json.
std::string fake_moin(const TempDir& dir, int failing_cluster) {
  std::string path = dir / "fake-moin.sh";
  moin::test::write_file(path, "#!/bin/sh\n"
                               "while [ $# -gt 0 ]; do case \"$1\" in\n"
                               "  --cluster) K=$2; shift;; --output) OUT=$2; shift;; esac; shift; done\n"
                               "echo \"cluster=$K cuda=${CUDA_VISIBLE_DEVICES:-} omp=${OMP_NUM_THREADS:-}\" >> " +
                                   dir / "calls.txt" +
                                   "\n"
                                   "if [ \"$K\" = \"" +
                                   std::to_string(failing_cluster) +
                                   "\" ]; then echo boom; exit 1; fi\n"
                                   "mkdir -p \"$OUT\" && echo '{\"final_valid_loss\": 1.5, \"initial_valid_loss\": 2.5, "
                                   "\"tokens_per_s\": 100}' > \"$OUT/summary.json\"\n");
  ::chmod(path.c_str(), 0755);
  return path;
}

int count_lines_with(const std::string& text, const std::string& needle) {
  int n = 0;
  std::size_t pos = 0;
  while ((pos = text.find(needle, pos)) != std::string::npos) {
    ++n;
    pos += needle.size();
  }
  return n;
}

TEST(Launch, SkipsFinishedClustersRetriesOnceAndReportsFailure) {
  TempDir dir;
  moin::test::write_partition(dir / "p", 4, 128, 3, 1);
  moin::test::write_file(dir / "train.json", "{}");
  stdfs::create_directories(dir.path / "experts" / "0");
  moin::test::write_file(dir / "experts/0/summary.json", "{\"final_valid_loss\": 0.5}");
  moin::LaunchOptions o;
  o.partition = dir / "p";
  o.config = dir / "train.json";
  o.output = dir / "experts";
  o.jobs = 2;
  o.gpus = "none";
  o.moin = fake_moin(dir, 2);
  auto report = moin::launch(o);
  ASSERT_EQ(report.jobs.size(), 4u);
  EXPECT_FALSE(report.ok());
  EXPECT_EQ(report.jobs[0].status, "skipped");
  EXPECT_EQ(report.jobs[0].attempts, 0);
  EXPECT_EQ(report.jobs[1].status, "done");
  EXPECT_EQ(report.jobs[1].attempts, 1);
  EXPECT_EQ(report.jobs[2].status, "failed");
  EXPECT_EQ(report.jobs[2].attempts, 2);  // retried once
  EXPECT_EQ(report.jobs[2].exit_code, 1);
  EXPECT_EQ(report.jobs[3].status, "done");
  auto calls = moin::test::read_file(dir / "calls.txt");
  EXPECT_EQ(count_lines_with(calls, "cluster=0 "), 0);
  EXPECT_EQ(count_lines_with(calls, "cluster=1 "), 1);
  EXPECT_EQ(count_lines_with(calls, "cluster=2 "), 2);
  EXPECT_EQ(count_lines_with(calls, "cluster=3 "), 1);
  EXPECT_NE(moin::test::read_file(report.jobs[2].log).find("boom"), std::string::npos);
  auto table = moin::format_launch_table(report);
  EXPECT_NE(table.find("failed"), std::string::npos) << table;
  EXPECT_NE(table.find("skipped"), std::string::npos) << table;
  EXPECT_NE(table.find("1.5000"), std::string::npos) << table;
  EXPECT_NE(table.find("4 clusters, 1 failed"), std::string::npos) << table;

  // Run again: only the failed cluster is tried (twice); the others are finished.
  moin::test::write_file(dir / "calls.txt", "");
  auto again = moin::launch(o);
  calls = moin::test::read_file(dir / "calls.txt");
  EXPECT_EQ(count_lines_with(calls, "cluster="), 2);
  EXPECT_EQ(again.jobs[1].status, "skipped");
}

TEST(Launch, OneJobPerGpuWithItsOwnDevice) {
  TempDir dir;
  moin::test::write_partition(dir / "p", 3, 128, 3, 1);
  moin::test::write_file(dir / "train.json", "{\"output\": \"" + (dir / "experts") + "\"}");
  moin::LaunchOptions o;
  o.partition = dir / "p";
  o.config = dir / "train.json";  // the experts folder comes from the train config
  o.gpus = "4,7";
  o.moin = fake_moin(dir, -1);
  auto report = moin::launch(o);
  EXPECT_TRUE(report.ok());
  auto calls = moin::test::read_file(dir / "calls.txt");
  // Two GPUs: clusters 0 and 1 start on 4 and 7; cluster 2 takes whichever frees first.
  EXPECT_EQ(count_lines_with(calls, "cluster=0 cuda=4"), 1) << calls;
  EXPECT_EQ(count_lines_with(calls, "cluster=1 cuda=7"), 1) << calls;
  EXPECT_EQ(count_lines_with(calls, "cuda=4") + count_lines_with(calls, "cuda=7"), 3) << calls;
  EXPECT_TRUE(stdfs::exists(dir.path / "experts" / "2" / "summary.json"));
}

TEST(Launch, CliExitsNonZeroAndPrintsTheTable) {
  TempDir dir;
  moin::test::write_partition(dir / "p", 2, 128, 3, 1);
  moin::test::write_file(dir / "train.json", "{}");
  auto r = moin::test::run_moin("launch --partition " + (dir / "p") + " --config " + (dir / "train.json") +
                                " --output " + (dir / "experts") + " --gpus none --moin " + fake_moin(dir, 1));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("failed"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("2 clusters, 1 failed"), std::string::npos) << r.output;
}

TEST(Launch, SlurmScriptIsAJobArrayOverUnfinishedClusters) {
  TempDir dir;
  moin::test::write_partition(dir / "p", 4, 128, 3, 1);
  moin::test::write_file(dir / "train.json", "{}");
  stdfs::create_directories(dir.path / "experts" / "1");
  moin::test::write_file(dir / "experts/1/summary.json", "{}");
  moin::LaunchOptions o;
  o.partition = dir / "p";
  o.config = dir / "train.json";
  o.output = dir / "experts";
  o.slurm = dir / "experts.sbatch";
  o.set = {"lr=0.001"};
  o.moin = "/opt/moin/bin/moin";
  o.slurm_options.time = "02:00:00";
  o.slurm_options.max_parallel = 2;
  auto report = moin::launch(o);
  EXPECT_TRUE(report.jobs.empty());
  auto sh = moin::test::read_file(dir / "experts.sbatch");
  EXPECT_NE(sh.find("#SBATCH --array=0,2-3%2\n"), std::string::npos) << sh;  // task i = cluster i here
  EXPECT_NE(sh.find("#SBATCH --gres=gpu:1\n"), std::string::npos) << sh;
  EXPECT_NE(sh.find("#SBATCH --time=02:00:00\n"), std::string::npos) << sh;
  EXPECT_NE(sh.find("${SLURM_ARRAY_TASK_ID"), std::string::npos) << sh;
  EXPECT_NE(sh.find("'/opt/moin/bin/moin' 'train' '--mode' 'expert' '--config' '" + (dir / "train.json") + "'"),
            std::string::npos)
      << sh;
  // One expert per task: today's command line, unchanged.
  EXPECT_NE(sh.find("'--cluster' \"$K\" '--output' \"$OUT/$K\" '--resume' '--set' 'lr=0.001'"), std::string::npos)
      << sh;
  EXPECT_FALSE(stdfs::exists(dir.path / "experts" / "0"));  // nothing ran
  // Both scripts are valid shell.
  for (const char* f : {"experts.sbatch", "experts.submit.sh"}) {
    auto r = moin::run_process({"/bin/bash", "-n", dir / f});
    EXPECT_EQ(r.exit_code, 0) << f << ": " << r.output;
  }
  // Run as task 1 (finished) it exits 0 without training.
  auto fin = moin::ChildProcess::spawn({"/bin/bash", dir / "experts.sbatch"}, {{"SLURM_ARRAY_TASK_ID", "1"}},
                                       dir / "task1.log");
  EXPECT_EQ(fin.wait(), 0) << moin::test::read_file(dir / "task1.log");
  EXPECT_NE(moin::test::read_file(dir / "task1.log").find("finished before"), std::string::npos);
}

TEST(Launch, ArrayRangesCompressRunsAndKeepHoles) {
  EXPECT_EQ(moin::array_ranges({}), "");
  EXPECT_EQ(moin::array_ranges({5}), "5");
  EXPECT_EQ(moin::array_ranges({0, 1, 2, 3, 7, 9, 10, 11, 12}), "0-3,7,9-12");
  EXPECT_EQ(moin::array_ranges({12, 3, 1, 2, 2, 0, 9}), "0-3,9,12");  // any order, duplicates once
  EXPECT_EQ(moin::array_ranges({1, 3, 5}), "1,3,5");
  EXPECT_EQ(moin::array_ranges({998, 999}), "998-999");
}

TEST(Launch, ChunksGroupClustersInOrder) {
  using V = std::vector<std::vector<int>>;
  EXPECT_EQ(moin::chunk_clusters({0, 2, 3, 4, 7}, 2), (V{{0, 2}, {3, 4}, {7}}));
  EXPECT_EQ(moin::chunk_clusters({0, 2, 3}, 1), (V{{0}, {2}, {3}}));
  EXPECT_EQ(moin::chunk_clusters({0, 2, 3}, 5), (V{{0, 2, 3}}));
  EXPECT_TRUE(moin::chunk_clusters({}, 3).empty());
}

std::vector<int> iota(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = i;
  return v;
}

TEST(Launch, SlurmPlanSplitsArraysBelowMaxArraySize) {
  moin::LaunchOptions o;  // defaults: max_array_size 1000, one expert per task
  auto plan = moin::slurm_plan(o, iota(5000), {});
  ASSERT_EQ(plan.tasks.size(), 5000u);
  ASSERT_EQ(plan.arrays.size(), 5u);
  for (int a = 0; a < 5; ++a) {
    EXPECT_EQ(plan.arrays[a].offset, 1000 * a);
    EXPECT_EQ(plan.arrays[a].spec, "0-999");  // task ids stay below Slurm's default MaxArraySize (1001)
    EXPECT_EQ(plan.arrays[a].task_ids.size(), 1000u);
  }
  EXPECT_EQ(plan.tasks[4321], std::vector<int>{4321});

  // Finished clusters are holes; an array with nothing left is not submitted; the throttle is kept.
  o.slurm_options.max_parallel = 8;
  std::vector<int> finished = {1, 2, 1500, 4999};
  for (int k = 2000; k < 3000; ++k) finished.push_back(k);
  plan = moin::slurm_plan(o, iota(5000), finished);
  ASSERT_EQ(plan.arrays.size(), 4u);
  EXPECT_EQ(plan.arrays[0].spec, "0,3-999%8");
  EXPECT_EQ(plan.arrays[1].spec, "0-499,501-999%8");
  EXPECT_EQ(plan.arrays[2].offset, 3000);
  EXPECT_EQ(plan.arrays[2].spec, "0-999%8");
  EXPECT_EQ(plan.arrays[3].offset, 4000);
  EXPECT_EQ(plan.arrays[3].spec, "0-998%8");

  // Several experts per task: a task is left out only when all of its clusters are finished.
  moin::LaunchOptions g;
  g.experts_per_job = 3;
  g.slurm_options.max_array_size = 2;
  plan = moin::slurm_plan(g, iota(10), {3, 4, 5, 7});
  using V = std::vector<std::vector<int>>;
  EXPECT_EQ(plan.tasks, (V{{0, 1, 2}, {3, 4, 5}, {6, 7, 8}, {9}}));
  ASSERT_EQ(plan.arrays.size(), 2u);
  EXPECT_EQ(plan.arrays[0].spec, "0");
  EXPECT_EQ(plan.arrays[1].offset, 2);
  EXPECT_EQ(plan.arrays[1].spec, "0-1");
}

// A fake `moin` for jobs of several clusters: appends "clusters=K1,K2 out=OUT" to calls.txt and writes
// OUT/K/summary.json for each cluster (too_small's says "status": "too_small"); it exits 1 after the others
// when the failing cluster is among them.
std::string fake_moin_chunks(const TempDir& dir, int failing_cluster, int too_small) {
  std::string path = dir / "fake-moin-chunks.sh";
  moin::test::write_file(
      path, "#!/bin/sh\n"
            "while [ $# -gt 0 ]; do case \"$1\" in\n"
            "  --cluster) KS=$2; SINGLE=1; shift;; --clusters) KS=$2; shift;; --output) OUT=$2; shift;; esac; shift; done\n"
            "echo \"clusters=$KS out=$OUT single=${SINGLE:-0}\" >> " + dir / "calls.txt" + "\n"
            "rc=0\n"
            "for k in $(echo \"$KS\" | tr , ' '); do\n"
            "  if [ \"$k\" = \"" + std::to_string(failing_cluster) + "\" ]; then echo \"boom $k\"; rc=1; continue; fi\n"
            "  d=\"$OUT/$k\"; [ -n \"${SINGLE:-}\" ] && d=\"$OUT\"\n"
            "  mkdir -p \"$d\"\n"
            "  if [ \"$k\" = \"" + std::to_string(too_small) + "\" ]; then echo '{\"status\": \"too_small\"}' > \"$d/summary.json\";\n"
            "  else echo '{\"final_valid_loss\": 1.5, \"tokens_per_s\": 100}' > \"$d/summary.json\"; fi\n"
            "done\nexit $rc\n");
  ::chmod(path.c_str(), 0755);
  return path;
}

TEST(Launch, ExpertsPerJobGroupsClustersAndRetriesOnlyTheUnfinished) {
  TempDir dir;
  moin::test::write_partition(dir / "p", 5, 128, 3, 1);
  moin::test::write_file(dir / "train.json", "{}");
  stdfs::create_directories(dir.path / "experts" / "1");
  moin::test::write_file(dir / "experts/1/summary.json", "{\"final_valid_loss\": 0.5}");
  moin::LaunchOptions o;
  o.partition = dir / "p";
  o.config = dir / "train.json";
  o.output = dir / "experts";
  o.experts_per_job = 2;
  o.gpus = "none";
  o.moin = fake_moin_chunks(dir, 3, 2);
  auto report = moin::launch(o);
  ASSERT_EQ(report.jobs.size(), 5u);
  EXPECT_FALSE(report.ok());
  auto calls = moin::test::read_file(dir / "calls.txt");
  // Clusters still to train, 0 2 3 4, in jobs of two; the failed job runs again for cluster 3 alone.
  const std::string out = dir / "experts";
  EXPECT_EQ(count_lines_with(calls, "clusters=0,2 out=" + out + " single=0"), 1) << calls;
  EXPECT_EQ(count_lines_with(calls, "clusters=3,4 out=" + out + " single=0"), 1) << calls;
  EXPECT_EQ(count_lines_with(calls, "clusters=3 out=" + out + " single=0"), 1) << calls;
  EXPECT_EQ(count_lines_with(calls, "clusters="), 3) << calls;
  EXPECT_EQ(report.jobs[0].status, "done");
  EXPECT_EQ(report.jobs[1].status, "skipped");
  EXPECT_EQ(report.jobs[2].status, "done");
  EXPECT_TRUE(report.jobs[2].too_small());
  EXPECT_EQ(report.jobs[3].status, "failed");
  EXPECT_EQ(report.jobs[3].attempts, 2);
  EXPECT_EQ(report.jobs[3].log, dir / "experts/logs/3-4.log");
  EXPECT_EQ(report.jobs[4].status, "done");
  EXPECT_NE(moin::test::read_file(dir / "experts/logs/3-4.log").find("boom 3"), std::string::npos);
  auto table = moin::format_launch_table(report);
  EXPECT_NE(table.find("no expert (too small)"), std::string::npos) << table;
  EXPECT_NE(table.find("5 clusters, 1 failed, 1 too small for an expert"), std::string::npos) << table;
  EXPECT_NE(table.find("cluster 3 failed (see " + (dir / "experts/logs/3-4.log") + ")"), std::string::npos) << table;

  // Run again: the too-small cluster counts as finished; only cluster 3 is tried.
  moin::test::write_file(dir / "calls.txt", "");
  auto again = moin::launch(o);
  calls = moin::test::read_file(dir / "calls.txt");
  EXPECT_EQ(count_lines_with(calls, "clusters=3 out="), 2) << calls;
  EXPECT_EQ(count_lines_with(calls, "clusters="), 2) << calls;
  EXPECT_EQ(again.jobs[2].status, "skipped");
  EXPECT_NE(moin::format_launch_table(again).find("no expert (too small)"), std::string::npos);
}

// The job script, run as Slurm would run it (SLURM_ARRAY_TASK_ID, MOIN_TASK_OFFSET from the submit script),
// with a fake moin; the submit script, with a fake sbatch on the PATH.
TEST(Launch, SlurmTasksIndexTheTaskListAndTheSubmitScriptSubmitsEveryArray) {
  TempDir dir;
  moin::test::write_file(dir / "train.json", "{}");
  moin::LaunchOptions o;
  o.partition = dir / "p";
  o.config = dir / "train.json";
  o.output = dir / "experts";
  o.slurm = dir / "experts.sbatch";
  o.moin = fake_moin_chunks(dir, -1, -1);
  o.experts_per_job = 3;
  o.slurm_options.max_array_size = 1000;
  o.slurm_options.max_parallel = 4;
  stdfs::create_directories(dir.path / "experts" / "3004");
  moin::test::write_file(dir / "experts/3004/summary.json", "{}");
  auto plan = moin::slurm_plan(o, iota(3600), {3004});  // 1200 tasks of three clusters: two arrays
  ASSERT_EQ(plan.arrays.size(), 2u);
  moin::test::write_file(o.slurm, moin::slurm_script(o, plan));
  moin::test::write_file(moin::submit_script_path(o.slurm), moin::slurm_submit_script(o, plan));
  EXPECT_EQ(moin::submit_script_path(o.slurm), dir / "experts.submit.sh");
  auto sh = moin::test::read_file(o.slurm);
  EXPECT_NE(sh.find("#SBATCH --array=0-999%4\n"), std::string::npos) << sh.substr(0, 2000);
  EXPECT_NE(sh.find("'--clusters' \"$K\" '--output' \"$OUT\" '--resume'"), std::string::npos);

  // Task 1001 = array 1's task 1: clusters 3003-3005, of which 3004 is finished.
  auto t = moin::ChildProcess::spawn({"/bin/bash", o.slurm},
                                     {{"SLURM_ARRAY_TASK_ID", "1"}, {"MOIN_TASK_OFFSET", "1000"}}, dir / "t.log");
  ASSERT_EQ(t.wait(), 0) << moin::test::read_file(dir / "t.log");
  EXPECT_EQ(moin::test::read_file(dir / "calls.txt"), "clusters=3003,3005 out=" + (dir / "experts") + " single=0\n");
  auto again = moin::ChildProcess::spawn({"/bin/bash", o.slurm},
                                         {{"SLURM_ARRAY_TASK_ID", "1"}, {"MOIN_TASK_OFFSET", "1000"}}, dir / "t.log");
  ASSERT_EQ(again.wait(), 0);
  EXPECT_NE(moin::test::read_file(dir / "t.log").find("task 1001 (clusters 3003,3004,3005): finished before"),
            std::string::npos);
  // Without MOIN_TASK_OFFSET (plain `sbatch experts.sbatch`) the task ids are the first array's.
  auto first = moin::ChildProcess::spawn({"/bin/bash", o.slurm}, {{"SLURM_ARRAY_TASK_ID", "2"}}, dir / "f.log");
  ASSERT_EQ(first.wait(), 0) << moin::test::read_file(dir / "f.log");
  EXPECT_NE(moin::test::read_file(dir / "calls.txt").find("clusters=6,7,8 "), std::string::npos);

  // The submit script: one sbatch per array, each with its offset.
  stdfs::create_directories(dir.path / "bin");
  moin::test::write_file(dir / "bin/sbatch", "#!/bin/sh\necho \"$*\" >> " + dir / "sbatch.txt" + "\necho 4242\n");
  ::chmod((dir / "bin/sbatch").c_str(), 0755);
  auto sub = moin::ChildProcess::spawn({"/bin/bash", moin::submit_script_path(o.slurm)},
                                       {{"PATH", (dir / "bin") + ":/usr/bin:/bin"}}, dir / "sub.log");
  ASSERT_EQ(sub.wait(), 0) << moin::test::read_file(dir / "sub.log");
  EXPECT_EQ(moin::test::read_file(dir / "sbatch.txt"),
            "--parsable --array=0-999%4 --export=ALL,MOIN_TASK_OFFSET=0 " + o.slurm + "\n" +
                "--parsable --array=0-199%4 --export=ALL,MOIN_TASK_OFFSET=1000 " + o.slurm + "\n");
  EXPECT_NE(moin::test::read_file(dir / "sub.log").find("tasks 1000-1199 (200): job 4242"), std::string::npos);
}

TEST(Launch, ExpertsPerJobIsAFlagAndAConfigKey) {
  TempDir dir;
  moin::test::write_partition(dir / "p", 3, 128, 3, 1);
  moin::test::write_file(dir / "train.json", "{}");
  auto r = moin::test::run_moin("launch --partition " + (dir / "p") + " --config " + (dir / "train.json") +
                                " --output " + (dir / "experts") + " --gpus none --experts-per-job 2 --moin " +
                                fake_moin_chunks(dir, -1, 1));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("no expert (too small)"), std::string::npos) << r.output;
  auto calls = moin::test::read_file(dir / "calls.txt");
  EXPECT_EQ(count_lines_with(calls, "clusters=0,1 "), 1) << calls;
  EXPECT_EQ(count_lines_with(calls, "clusters=2 "), 1) << calls;
  auto bad = moin::test::run_moin("launch --partition " + (dir / "p") + " --config " + (dir / "train.json") +
                                  " --set experts_per_job=0");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("experts_per_job must be at least 1"), std::string::npos) << bad.output;
}

}  // namespace
