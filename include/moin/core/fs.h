// Files written safely: every artifact goes to a temporary file in the same folder, is flushed and
// fsync'ed, then renamed over the target. A crash leaves the old file or the new one, never half of one.
#pragma once
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <string_view>

namespace moin::fs {

namespace stdfs = std::filesystem;

// A unique temporary name beside `target` (same folder, so rename() is atomic).
stdfs::path temp_path_for(const stdfs::path& target);
// fsync()s `tmp`, renames it to `target`, then fsync()s the folder.
void commit_temp(const stdfs::path& tmp, const stdfs::path& target);

// Every write below fails with std::runtime_error naming the file and the system's reason ("No space left
// on device"), leaves the previous target untouched and removes its temporary file.
void write_atomic(const stdfs::path& target, std::string_view data);
void write_json_atomic(const stdfs::path& target, const nlohmann::json& j, int indent = 2);
// Calls write(tmp_path) to produce the file, then commits it; removes tmp on failure.
void write_atomic_with(const stdfs::path& target, const std::function<void(const stdfs::path&)>& write);
// Streams the file: produce(sink) calls sink(data, n) for each piece. The sink never throws (a producer
// such as torch's archive writer must not see an exception mid-write); the first failed write is
// remembered, later pieces are dropped, and the error is thrown once produce returns.
using ByteSink = std::function<void(const void* data, std::size_t n)>;
void write_atomic_stream(const stdfs::path& target, const std::function<void(const ByteSink&)>& produce);

// Appends one line (a newline is added) to a log-like file such as metrics.jsonl; throws on failure.
void append_line(const stdfs::path& path, std::string_view line);

// An exclusive lock on an output folder, held while this object lives: flock() on DIR/.moin.lock, which
// holds the holder's pid. The kernel releases a flock when its holder dies, however it dies, so a lock
// left by a killed process is simply taken by the next one. The descriptor is close-on-exec: children
// take their own locks on their own folders.
class FolderLock {
 public:
  // UserError naming the holder's pid when another process holds the folder. `lock_name` locks one part
  // of a folder that several processes share (a slice of a sharded step).
  explicit FolderLock(const stdfs::path& dir, const std::string& lock_name = ".moin.lock");
  ~FolderLock();
  FolderLock(FolderLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  FolderLock& operator=(FolderLock&&) = delete;
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

 private:
  int fd_ = -1;
};

// Whole-file reads; UserError naming the file when it is missing or (for JSON) malformed.
std::string read_text(const stdfs::path& path);
nlohmann::json read_json(const stdfs::path& path);

// Whether `path` is `dir` or lies below it, after resolving both (symbolic links, "..", relative paths).
bool is_within(const stdfs::path& path, const stdfs::path& dir);
// UserError "WHAT: the output folder OUTPUT is the INPUT_WHAT INPUT (or inside it)..." when the output folder
// would write into one of a command's input folders (a partition, a base model, a corpus folder).
void require_output_outside(const stdfs::path& output, const stdfs::path& input, const std::string& what,
                            const std::string& input_what);

// Creates the folder (and parents); UserError naming it when that fails.
void ensure_dir(const stdfs::path& dir);
// UserError "WHAT: cannot write in DIR: <reason>" unless a file can be created in dir (read-only
// filesystem, permissions): for writers, such as sentencepiece's, that fail without saying why.
void require_writable(const stdfs::path& dir, const std::string& what);

}  // namespace moin::fs
