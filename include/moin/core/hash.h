// Content hashes: SHA-256 to identify files (which tokenizer made a shard), and a small stable 64-bit hash
// for deterministic decisions (train/valid split of a document) that must not change between runs,
// machines or compilers (std::hash may).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moin {

// Lowercase hex SHA-256 of the bytes / of a file's content (UserError naming a missing file).
std::string sha256_hex(std::string_view data);
std::string sha256_file(const std::string& path);

// 64-bit FNV-1a followed by a splitmix64 finaliser: stable, fast, well mixed in every bit.
std::uint64_t stable_hash64(std::string_view data, std::uint64_t seed = 0);

// A cheap fingerprint of a list of files (16 hex digits): each file's name (not its folder, so a moved
// folder keeps its fingerprint), size and content; a file over 4 MiB contributes 64 blocks of 64 KiB
// spread evenly from its first byte to its last, so a multi-GB model costs milliseconds. Two different
// trainings of one architecture differ in every block. UserError naming a missing file.
std::string files_fingerprint(const std::vector<std::string>& paths);

}  // namespace moin
