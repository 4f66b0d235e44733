#include "moin/core/process.h"

#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

extern char** environ;

namespace moin {

namespace {

// In a freshly forked child: die with the parent. A `kill -9` of `moin run` or `moin launch` cannot
// clean up after itself, so the kernel must: PR_SET_PDEATHSIG sends SIGKILL when the parent (the thread
// that forked; moin forks from its main thread) ends. When the parent died before prctl() took effect,
// the child was already reparented: getppid() is no longer the parent, and the child exits itself.
// Async-signal-safe calls only.
void die_with_parent(pid_t parent) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(137);
}

}  // namespace

ProcessResult run_process(const std::vector<std::string>& argv, bool capture_output, const std::string& tee_file) {
  if (argv.empty()) throw std::invalid_argument("run_process: empty argv");
  const bool tee = !tee_file.empty();
  if (tee) capture_output = true;
  int tee_fd = -1;
  if (tee) {
    tee_fd = ::open(tee_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (tee_fd < 0) throw std::runtime_error("cannot open " + tee_file + ": " + std::strerror(errno));
  }
  int pipefd[2] = {-1, -1};
  if (capture_output && ::pipe2(pipefd, O_CLOEXEC) != 0) {
    if (tee_fd >= 0) ::close(tee_fd);
    throw std::runtime_error("pipe failed: " + std::string(std::strerror(errno)));
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    for (int fd : {pipefd[0], pipefd[1], tee_fd})
      if (fd >= 0) ::close(fd);
    throw std::runtime_error("fork failed: " + std::string(std::strerror(err)));
  }
  if (pid == 0) {
    die_with_parent(parent);
    if (capture_output) {
      ::dup2(pipefd[1], STDOUT_FILENO);
      ::dup2(pipefd[1], STDERR_FILENO);
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
    while ((n = ::read(pipefd[0], buf, sizeof buf)) != 0) {
      if (n < 0) {
        if (errno == EINTR) continue;
        break;
      }
      if (!tee) {
        r.output.append(buf, static_cast<std::size_t>(n));
        continue;
      }
      // Shown and logged as it comes; a failed log write (full disk) must not stop the child's output.
      [[maybe_unused]] auto a = ::write(STDERR_FILENO, buf, static_cast<std::size_t>(n));
      [[maybe_unused]] auto b = ::write(tee_fd, buf, static_cast<std::size_t>(n));
    }
    ::close(pipefd[0]);
  }
  if (tee_fd >= 0) ::close(tee_fd);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

ChildProcess ChildProcess::spawn(const std::vector<std::string>& argv,
                                 const std::map<std::string, std::string>& env, const std::string& output_file) {
  if (argv.empty()) throw std::invalid_argument("ChildProcess::spawn: empty argv");
  // Everything the child needs is prepared before fork(): after it, only async-signal-safe calls.
  std::vector<std::string> env_strings;
  for (char** e = environ; e && *e; ++e) {
    std::string entry(*e);
    std::string key = entry.substr(0, entry.find('='));
    if (env.count(key) == 0) env_strings.push_back(std::move(entry));
  }
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp, args;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int out_fd = -1;
  if (!output_file.empty()) {
    out_fd = ::open(output_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out_fd < 0) throw std::runtime_error("cannot open " + output_file + ": " + std::strerror(errno));
  }
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    if (out_fd >= 0) ::close(out_fd);
    throw std::runtime_error("fork failed: " + std::string(std::strerror(errno)));
  }
  if (pid == 0) {
    die_with_parent(parent);
    if (out_fd >= 0) {
      ::dup2(out_fd, STDOUT_FILENO);
      ::dup2(out_fd, STDERR_FILENO);
    }
    ::execve(args[0], args.data(), envp.data());
    const char msg[] = "cannot execute the child program\n";
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, msg, sizeof msg - 1);
    ::_exit(127);
  }
  if (out_fd >= 0) ::close(out_fd);
  ChildProcess c;
  c.pid_ = pid;
  return c;
}

ChildProcess::ChildProcess(ChildProcess&& o) noexcept : pid_(o.pid_), exit_code_(o.exit_code_) { o.pid_ = -1; }

ChildProcess& ChildProcess::operator=(ChildProcess&& o) noexcept {
  pid_ = o.pid_;
  exit_code_ = o.exit_code_;
  o.pid_ = -1;
  return *this;
}

static int decode_status(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::optional<int> ChildProcess::poll() {
  if (exit_code_ || pid_ < 0) return exit_code_;
  int status = 0;
  pid_t r;
  while ((r = ::waitpid(pid_, &status, WNOHANG)) < 0 && errno == EINTR) {
  }
  if (r == pid_) exit_code_ = decode_status(status);
  return exit_code_;
}

int ChildProcess::wait() {
  if (exit_code_ || pid_ < 0) return exit_code_.value_or(-1);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  exit_code_ = decode_status(status);
  return *exit_code_;
}

void ChildProcess::kill(int signal) {
  if (pid_ > 0 && !poll()) ::kill(pid_, signal);
}

void reuse_freed_memory() {
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr) mallopt(M_MMAP_THRESHOLD, 32 << 20);
  if (std::getenv("MALLOC_TRIM_THRESHOLD_") == nullptr) mallopt(M_TRIM_THRESHOLD, 1 << 30);
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
