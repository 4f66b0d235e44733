#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "test_util.h"

namespace {

using moin::test::TempDir;

TEST(AtomicWrite, ReplacesContentAndLeavesNoTemporaries) {
  TempDir dir;
  std::string target = dir / "manifest.json";
  moin::fs::write_atomic(target, "first");
  moin::fs::write_atomic(target, "second");
  EXPECT_EQ(moin::test::read_file(target), "second");
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

// A process killed in the middle of writing leaves the previous file intact (the crash case).
TEST(AtomicWrite, KillDuringWriteKeepsThePreviousFile) {
  TempDir dir;
  std::string target = dir / "checkpoint.bin";
  std::string good(1 << 20, 'g');
  moin::fs::write_atomic(target, good);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    moin::fs::write_atomic_with(target, [](const std::filesystem::path& tmp) {
      std::ofstream out(tmp, std::ios::binary);
      std::string half(1 << 19, 'b');
      out.write(half.data(), static_cast<std::streamsize>(half.size()));
      out.flush();
      ::kill(::getpid(), SIGKILL);  // dies before the rename
    });
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(moin::test::read_file(target), good);
}

TEST(AtomicWrite, FailedWriterRemovesItsTemporary) {
  TempDir dir;
  std::string target = dir / "adapter.safetensors";
  EXPECT_THROW(moin::fs::write_atomic_with(target, [](const std::filesystem::path& tmp) {
                 std::ofstream(tmp) << "partial";
                 throw std::runtime_error("disk full");
               }),
               std::runtime_error);
  EXPECT_FALSE(std::filesystem::exists(target));
  EXPECT_TRUE(std::filesystem::is_empty(dir.path));
}

TEST(Files, ReadJsonNamesTheFile) {
  TempDir dir;
  std::string p = dir / "bad.json";
  moin::test::write_file(p, "{oops");
  try {
    moin::fs::read_json(p);
    FAIL() << "no error";
  } catch (const moin::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos);
  }
}

}  // namespace
