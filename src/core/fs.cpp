#include "moin/core/fs.h"
#include "moin/core/json.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <random>
#include <sstream>

#include "moin/core/error.h"
#include "moin/core/log.h"

namespace moin::fs {

stdfs::path temp_path_for(const stdfs::path& target) {
  static std::atomic<unsigned> counter{0};
  std::random_device rd;
  std::ostringstream name;
  name << "." << target.filename().string() << ".tmp." << ::getpid() << "." << counter++ << "." << (rd() & 0xffff);
  return target.parent_path() / name.str();
}

static void fsync_dir(const stdfs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: some filesystems refuse to open folders
  ::fsync(fd);
  ::close(fd);
}

static std::runtime_error write_error(const stdfs::path& target, int err) {
  return std::runtime_error("cannot write " + target.string() + ": " + std::strerror(err));
}

static void remove_quietly(const stdfs::path& p) {
  std::error_code ec;
  stdfs::remove(p, ec);
}

void commit_temp(const stdfs::path& tmp, const stdfs::path& target) {
  // The data must be on disk before the rename makes it the target; a failed fsync (EIO, ENOSPC on
  // filesystems that allocate late) would otherwise publish a file that is not all there.
  int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    int err = ::fsync(fd) == 0 ? 0 : errno;
    ::close(fd);
    if (err != 0 && err != EINVAL && err != EROFS) {  // EINVAL/EROFS: this file cannot be synced at all
      remove_quietly(tmp);
      throw write_error(target, err);
    }
  }
  std::error_code ec;
  stdfs::rename(tmp, target, ec);
  if (ec) {
    remove_quietly(tmp);
    throw std::runtime_error("cannot move " + tmp.string() + " to " + target.string() + ": " + ec.message());
  }
  auto dir = target.parent_path();
  fsync_dir(dir.empty() ? stdfs::path(".") : dir);
}

void write_atomic_with(const stdfs::path& target, const std::function<void(const stdfs::path&)>& write) {
  if (!target.parent_path().empty()) ensure_dir(target.parent_path());
  auto tmp = temp_path_for(target);
  try {
    write(tmp);
  } catch (...) {
    remove_quietly(tmp);
    throw;
  }
  commit_temp(tmp, target);
}

void write_atomic_stream(const stdfs::path& target, const std::function<void(const ByteSink&)>& produce) {
  if (!target.parent_path().empty()) ensure_dir(target.parent_path());
  auto tmp = temp_path_for(target);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw write_error(target, errno);
  int err = 0;
  ByteSink sink = [&](const void* data, std::size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0 && err == 0) {
      ssize_t w = ::write(fd, p, n);
      if (w < 0) {
        if (errno != EINTR) err = errno;
        continue;
      }
      p += w;
      n -= static_cast<std::size_t>(w);
    }
  };
  try {
    produce(sink);
  } catch (...) {
    ::close(fd);
    remove_quietly(tmp);
    throw;
  }
  if (err == 0 && ::fsync(fd) != 0 && errno != EINVAL && errno != EROFS) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) {
    remove_quietly(tmp);
    throw write_error(target, err);
  }
  commit_temp(tmp, target);
}

void write_atomic(const stdfs::path& target, std::string_view data) {
  write_atomic_stream(target, [&](const ByteSink& sink) { sink(data.data(), data.size()); });
}

void append_line(const stdfs::path& path, std::string_view line) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw write_error(path, errno);
  std::string text(line);
  text += '\n';
  // One write() call: concurrent appenders (there should be none: see FolderLock) never interleave bytes.
  ssize_t w;
  while ((w = ::write(fd, text.data(), text.size())) < 0 && errno == EINTR) {
  }
  int err = w < 0 ? errno : (static_cast<std::size_t>(w) != text.size() ? ENOSPC : 0);
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) throw write_error(path, err);
}

// Whether pid is a running process. A zombie (killed, not yet reaped: in a container whose init does not
// reap, it stays one) writes nothing more and counts as gone.
static bool process_running(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  auto paren = text.rfind(')');
  return paren == std::string::npos || paren + 2 >= text.size() || text[paren + 2] != 'Z';
}

// The temporary files (temp_path_for's ".NAME.tmp.PID.N.R") that a killed writer left in the folder tree.
// Only those of processes that no longer run are removed: a live pid may be a child job writing in its
// own subfolder.
static void remove_stale_temps(const stdfs::path& dir) {
  std::error_code ec;
  for (stdfs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    auto at = name.rfind(".tmp.");
    if (name.empty() || name[0] != '.' || at == std::string::npos || !it->is_regular_file(ec)) continue;
    const std::string rest = name.substr(at + 5);  // PID.N.R
    auto dot = rest.find('.');
    if (dot == std::string::npos || dot == 0 || rest.find_first_not_of("0123456789.") != std::string::npos) continue;
    const long pid = std::strtol(rest.substr(0, dot).c_str(), nullptr, 10);
    if (pid <= 0 || pid == ::getpid() || process_running(static_cast<pid_t>(pid))) continue;
    std::error_code rm;
    if (stdfs::remove(it->path(), rm)) spdlog::debug("removed {}, left by a killed run", it->path().string());
  }
}

FolderLock::FolderLock(const stdfs::path& dir, const std::string& lock_name) {
  ensure_dir(dir);
  const stdfs::path path = dir / lock_name;
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw UserError("cannot open the lock file " + path.string() + ": " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {0};
    ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    std::string holder = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      throw UserError(dir.string() + " is in use by another moin process (pid " +
                      (holder.empty() ? std::string("unknown") : holder) +
                      "): one writer per output folder; wait for it, stop it, or choose another folder");
    if (err == ENOLCK || err == ENOTSUP || err == EOPNOTSUPP) {  // a filesystem without locks: run unlocked
      spdlog::warn("{}: this filesystem cannot lock files ({}); nothing stops a second writer", path.string(),
                   std::strerror(err));
      return;
    }
    throw UserError("cannot lock " + path.string() + ": " + std::strerror(err));
  }
  remove_stale_temps(dir);
  // The pid is for the message of a refused second writer; a full disk only costs that message.
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) == 0) {
    [[maybe_unused]] auto n = ::pwrite(fd_, pid.data(), pid.size(), 0);
  }
}

FolderLock::~FolderLock() {
  if (fd_ >= 0) ::close(fd_);
}

void write_json_atomic(const stdfs::path& target, const nlohmann::json& j, int indent) {
  write_atomic(target, j.dump(indent) + "\n");
}

std::string read_text(const stdfs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError("cannot open " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json read_json(const stdfs::path& path) {
  return parse_json(read_text(path), path.string());
}

void require_writable(const stdfs::path& dir, const std::string& what) {
  const stdfs::path probe = dir / (".moin-write-probe." + std::to_string(::getpid()));
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw UserError(what + ": cannot write in " + dir.string() + ": " + std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
}

bool is_within(const stdfs::path& path, const stdfs::path& dir) {
  std::error_code ec;
  const auto p = stdfs::weakly_canonical(stdfs::absolute(path), ec);
  const auto d = stdfs::weakly_canonical(stdfs::absolute(dir), ec);
  if (ec) return false;
  auto pi = p.begin();
  for (auto di = d.begin(); di != d.end(); ++di, ++pi) {
    if (di->empty()) continue;  // a trailing separator
    if (pi == p.end() || *pi != *di) return false;
  }
  return true;
}

void require_output_outside(const stdfs::path& output, const stdfs::path& input, const std::string& what,
                            const std::string& input_what) {
  if (output.empty() || input.empty()) return;
  if (is_within(output, input))
    throw UserError(what + ": the output folder " + output.string() + " is the " + input_what + " " + input.string() +
                    " or inside it: it would write among its files; choose another --output");
}

void ensure_dir(const stdfs::path& dir) {
  std::error_code ec;
  stdfs::create_directories(dir, ec);
  if (ec) throw UserError("cannot create folder " + dir.string() + ": " + ec.message());
}

}  // namespace moin::fs
