// Child processes: helper binaries (moin_spm_train) and, later, one training job per expert.
#pragma once
#include <string>
#include <vector>

namespace moin {

struct ProcessResult {
  int exit_code = -1;   // 128 + signal number when killed by a signal
  std::string output;   // stdout and stderr, when captured
};

// Runs argv[0] (a path) with the arguments, waits, and returns its exit code and (optionally) its output.
ProcessResult run_process(const std::vector<std::string>& argv, bool capture_output = true);

// Folder of the running executable (/proc/self/exe).
std::string executable_dir();

// A file shipped beside the moin binaries (shim library, helper executable): $ENV_OVERRIDE if set, then
// beside the executable, ../lib, then the build folder. Empty when not found.
std::string find_companion(const std::string& filename, const char* env_override = nullptr);

}  // namespace moin
