// Content hashes: SHA-256 to identify files (which tokenizer made a shard), and a small stable 64-bit hash
// for deterministic decisions (train/valid split of a document) that must not change between runs,
// machines or compilers (std::hash may).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace moin {

// Lowercase hex SHA-256 of the bytes / of a file's content (UserError naming a missing file).
std::string sha256_hex(std::string_view data);
std::string sha256_file(const std::string& path);

// 64-bit FNV-1a followed by a splitmix64 finaliser: stable, fast, well mixed in every bit.
std::uint64_t stable_hash64(std::string_view data, std::uint64_t seed = 0);

}  // namespace moin
