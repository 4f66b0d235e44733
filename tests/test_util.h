// Helpers shared by the unit tests: temporary folders, the real data in ../shared/data (optional), and
// running the `moin` executable.
#pragma once
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "moin/core/error.h"

namespace moin::test {

namespace stdfs = std::filesystem;

// A fresh folder under the system temp dir, removed when the object goes.
struct TempDir {
  stdfs::path path;
  TempDir() {
    std::random_device rd;
    path = stdfs::temp_directory_path() / ("moin-test-" + std::to_string(rd()) + std::to_string(rd()));
    stdfs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    stdfs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// ../shared/data beside the checkout (or $MOIN_SHARED_DATA); empty when absent.
inline std::string shared_data() {
  if (const char* env = std::getenv("MOIN_SHARED_DATA")) return env;
  stdfs::path p = stdfs::path(MOIN_SOURCE_DIR) / ".." / "shared" / "data";
  return stdfs::is_directory(p) ? stdfs::canonical(p).string() : "";
}

#define MOIN_REQUIRE_SHARED_DATA(var)                                                              \
  std::string var = ::moin::test::shared_data();                                                  \
  if (var.empty()) GTEST_SKIP() << "../shared/data is absent (a user's clone has none): skipped"

inline void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// The message of the UserError that f() throws; a test failure (and "") when it throws none.
template <class F> std::string user_error_of(F&& f) {
  try {
    f();
  } catch (const moin::UserError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no UserError";
  return "";
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct RunResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

// Runs `moin ARGS` through the shell; ARGS is pasted as is.
inline RunResult run_moin(const std::string& args, const std::string& stdin_file = "") {
  const char* bin = std::getenv("MOIN_BIN");
  std::string exe = bin ? bin : (std::string(MOIN_BINARY_DIR) + "/moin");
  std::string cmd = exe + " " + args + (stdin_file.empty() ? "" : " < " + stdin_file) + " 2>&1";
  RunResult r{-1, ""};
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

}  // namespace moin::test
