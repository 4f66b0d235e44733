#include "moin/core/fs.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>
#include <sstream>

#include "moin/core/error.h"

namespace moin::fs {

stdfs::path temp_path_for(const stdfs::path& target) {
  static std::atomic<unsigned> counter{0};
  std::random_device rd;
  std::ostringstream name;
  name << "." << target.filename().string() << ".tmp." << ::getpid() << "." << counter++ << "." << (rd() & 0xffff);
  return target.parent_path() / name.str();
}

static void fsync_path(const stdfs::path& p, bool dir) {
  int fd = ::open(p.c_str(), dir ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) return;  // best effort: some filesystems refuse to open folders
  ::fsync(fd);
  ::close(fd);
}

void commit_temp(const stdfs::path& tmp, const stdfs::path& target) {
  fsync_path(tmp, false);
  std::error_code ec;
  stdfs::rename(tmp, target, ec);
  if (ec) {
    stdfs::remove(tmp, ec);
    throw std::runtime_error("cannot move " + tmp.string() + " to " + target.string() + ": " + ec.message());
  }
  auto dir = target.parent_path();
  fsync_path(dir.empty() ? stdfs::path(".") : dir, true);
}

void write_atomic_with(const stdfs::path& target, const std::function<void(const stdfs::path&)>& write) {
  if (!target.parent_path().empty()) ensure_dir(target.parent_path());
  auto tmp = temp_path_for(target);
  try {
    write(tmp);
  } catch (...) {
    std::error_code ec;
    stdfs::remove(tmp, ec);
    throw;
  }
  commit_temp(tmp, target);
}

void write_atomic(const stdfs::path& target, std::string_view data) {
  write_atomic_with(target, [&](const stdfs::path& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error("cannot write " + tmp.string() + ": " + std::strerror(errno));
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.flush();
    if (!out) throw std::runtime_error("write failed for " + tmp.string() + ": " + std::strerror(errno));
  });
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
  std::string text = read_text(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw UserError(path.string() + " is not valid JSON: " + e.what());
  }
}

void ensure_dir(const stdfs::path& dir) {
  std::error_code ec;
  stdfs::create_directories(dir, ec);
  if (ec) throw UserError("cannot create folder " + dir.string() + ": " + ec.message());
}

}  // namespace moin::fs
