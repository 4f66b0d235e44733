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
  EXPECT_NE(sh.find("#SBATCH --array=0,2,3%2\n"), std::string::npos) << sh;
  EXPECT_NE(sh.find("#SBATCH --gres=gpu:1\n"), std::string::npos) << sh;
  EXPECT_NE(sh.find("#SBATCH --time=02:00:00\n"), std::string::npos) << sh;
  EXPECT_NE(sh.find("K=${SLURM_ARRAY_TASK_ID"), std::string::npos) << sh;
  EXPECT_NE(sh.find("'/opt/moin/bin/moin' 'train' '--mode' 'expert' '--config' '" + (dir / "train.json") + "'"),
            std::string::npos)
      << sh;
  EXPECT_NE(sh.find("'--cluster' \"$K\" '--output' \"$OUT\" '--resume' '--set' 'lr=0.001'"), std::string::npos)
      << sh;
  EXPECT_FALSE(stdfs::exists(dir.path / "experts" / "0"));  // nothing ran
  // The script is valid shell.
  auto r = moin::run_process({"/bin/bash", "-n", dir / "experts.sbatch"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // Run as task 1 (finished) it exits 0 without training.
  auto fin = moin::ChildProcess::spawn({"/bin/bash", dir / "experts.sbatch"}, {{"SLURM_ARRAY_TASK_ID", "1"}},
                                       dir / "task1.log");
  EXPECT_EQ(fin.wait(), 0) << moin::test::read_file(dir / "task1.log");
}

}  // namespace
