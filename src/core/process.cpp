#include "moin/core/process.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace moin {

ProcessResult run_process(const std::vector<std::string>& argv, bool capture_output) {
  if (argv.empty()) throw std::invalid_argument("run_process: empty argv");
  int pipefd[2] = {-1, -1};
  if (capture_output && ::pipe(pipefd) != 0) throw std::runtime_error("pipe failed: " + std::string(std::strerror(errno)));
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed: " + std::string(std::strerror(errno)));
  if (pid == 0) {
    if (capture_output) {
      ::dup2(pipefd[1], STDOUT_FILENO);
      ::dup2(pipefd[1], STDERR_FILENO);
      ::close(pipefd[0]);
      ::close(pipefd[1]);
    }
    ::execv(args[0], args.data());
    std::fprintf(stderr, "cannot run %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ProcessResult r;
  if (capture_output) {
    ::close(pipefd[1]);
    char buf[4096];
    ssize_t n;
    while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) r.output.append(buf, static_cast<std::size_t>(n));
    ::close(pipefd[0]);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

std::string executable_dir() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  buf[n] = '\0';
  return std::filesystem::path(buf).parent_path().string();
}

std::string find_companion(const std::string& filename, const char* env_override) {
  if (env_override) {
    if (const char* env = std::getenv(env_override)) return env;
  }
  std::string dir = executable_dir();
  for (const std::string& candidate :
       {dir + "/" + filename, dir + "/../lib/" + filename, std::string(MOIN_BINARY_DIR) + "/" + filename}) {
    if (std::filesystem::exists(candidate)) return candidate;
  }
  return "";
}

}  // namespace moin
