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

void write_atomic(const stdfs::path& target, std::string_view data);
void write_json_atomic(const stdfs::path& target, const nlohmann::json& j, int indent = 2);
// Calls write(tmp_path) to produce the file (e.g. torch::save), then commits it; removes tmp on failure.
void write_atomic_with(const stdfs::path& target, const std::function<void(const stdfs::path&)>& write);

// Whole-file reads; UserError naming the file when it is missing or (for JSON) malformed.
std::string read_text(const stdfs::path& path);
nlohmann::json read_json(const stdfs::path& path);

// Creates the folder (and parents); UserError naming it when that fails.
void ensure_dir(const stdfs::path& dir);

}  // namespace moin::fs
