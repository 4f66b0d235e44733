// Child processes: helper binaries (moin_spm_train) and, later, one training job per expert.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace moin {

struct ProcessResult {
  int exit_code = -1;   // 128 + signal number when killed by a signal
  std::string output;   // stdout and stderr, when captured
};

// Runs argv[0] (a path) with the arguments, waits, and returns its exit code and (optionally) its output.
// With `tee_file`, the child's stdout and stderr go to this process's stderr (logs; stdout stays for
// command output) and are appended to that
// file as they come (output is then not kept in the result).
// Every child, here and in ChildProcess, is killed (SIGKILL) when this process dies: no orphaned jobs.
ProcessResult run_process(const std::vector<std::string>& argv, bool capture_output = true,
                          const std::string& tee_file = "");

// A child process started without waiting (the launcher runs one training job per GPU at a time).
// Not copyable; a running child left behind is neither killed nor reaped by the destructor (detach).
class ChildProcess {
 public:
  // Starts argv[0] (a path) with the arguments. `env` entries are set in (or override) the child's copy
  // of the environment. With `output_file`, the child's stdout and stderr are appended there; otherwise
  // they are inherited. Throws std::runtime_error when fork fails; a program that cannot be executed
  // exits 127.
  static ChildProcess spawn(const std::vector<std::string>& argv,
                            const std::map<std::string, std::string>& env = {},
                            const std::string& output_file = "");

  ChildProcess(ChildProcess&& o) noexcept;
  ChildProcess& operator=(ChildProcess&& o) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() = default;

  int pid() const { return pid_; }
  // The exit code (128 + signal when killed) once the child has ended; nullopt while it runs. Non-blocking.
  std::optional<int> poll();
  // Blocks until the child ends; its exit code.
  int wait();
  // Sends `signal` (SIGTERM by default) while it runs.
  void kill(int signal = 15);

 private:
  ChildProcess() = default;
  int pid_ = -1;
  std::optional<int> exit_code_;
};

// Keeps the memory of freed tensors in the process for the next ones. By default glibc maps every large
// block afresh and hands it back on free, so each step's activations fault in their pages again (a third of a
// 50-expert pack's CPU time went to the kernel). Blocks up to 32 MB (glibc's limit) come from the heap, kept
// until 1 GiB is free at its top. Leaves settings given by MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_.
void reuse_freed_memory();

// Folder of the running executable (/proc/self/exe).
std::string executable_dir();

// A file shipped beside the moin binaries (shim library, helper executable): $ENV_OVERRIDE if set, then
// beside the executable, ../lib, then the build folder. Empty when not found.
std::string find_companion(const std::string& filename, const char* env_override = nullptr);

}  // namespace moin
