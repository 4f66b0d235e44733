// Token shards: the tokenised documents of one cluster split (clusters/<k>/train.bin, valid.bin), written
// by `moin partition` and read by the trainer.
//
// One shard is three files beside each other:
//   NAME.bin   the tokens of every document, concatenated, little-endian uint16 (vocabulary <= 65536) or
//              uint32; no separators (the trainer inserts EOS between documents when it packs sequences)
//   NAME.idx   n_docs + 1 little-endian uint64 token offsets: document i is tokens [idx[i], idx[i+1])
//   NAME.json  the header: {"format": "moin-token-shard", "version": 1, "dtype": "uint16"|"uint32",
//              "vocab_size", "n_docs", "n_tokens", "tokenizer": path, "tokenizer_sha256": hex}
// The writer commits .bin and .idx first and NAME.json last (each by temp file + rename), so a shard whose
// .json exists is complete; a killed writer leaves no .json (and stray temp files only).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moin {

// The header (NAME.json) of a token shard.
struct TokenShardInfo {
  std::string dtype;             // "uint16" or "uint32"
  int vocab_size = 0;
  std::int64_t n_docs = 0;
  std::int64_t n_tokens = 0;
  std::string tokenizer;         // path of the SentencePiece model used (informative)
  std::string tokenizer_sha256;  // its content hash; the trainer checks it against its own tokenizer
  int bytes_per_token() const { return dtype == "uint16" ? 2 : 4; }
};

// "dir/train" -> "dir/train.bin" etc. A shard is named by its path without extension; a path ending in
// .bin, .idx or .json is accepted too and stripped.
std::string token_shard_stem(const std::string& path);

// Appends documents to a new shard. Not thread-safe: one writer per shard.
class TokenShardWriter {
 public:
  // Starts the shard `path` (see token_shard_stem). dtype is uint16 when vocab_size <= 65536.
  TokenShardWriter(const std::string& path, int vocab_size, const std::string& tokenizer_path = "",
                   const std::string& tokenizer_sha256 = "");
  ~TokenShardWriter();  // without finish(): removes the temporary files, leaves no shard
  TokenShardWriter(const TokenShardWriter&) = delete;
  TokenShardWriter& operator=(const TokenShardWriter&) = delete;

  // Appends one document (an empty one is allowed and kept as an empty range). Ids must lie in
  // [0, vocab_size): std::invalid_argument otherwise.
  void append(const int* ids, std::size_t n);
  void append(const std::vector<int>& ids) { append(ids.data(), ids.size()); }
  // Flushes, fsyncs and renames the three files into place (.json last). Idempotent.
  void finish();

  std::int64_t num_docs() const { return static_cast<std::int64_t>(offsets_.size()) - 1; }
  std::int64_t num_tokens() const { return offsets_.back(); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<std::uint64_t> offsets_{0};
};

// Reads a finished shard through mmap: O(1) random access to any document or token, shared pages between
// processes, nothing loaded up front. Thread-safe (read-only).
class TokenShardReader {
 public:
  // UserError naming the file when the shard is missing, unfinished (no .json) or inconsistent
  // (.bin/.idx sizes do not match the header).
  explicit TokenShardReader(const std::string& path);
  ~TokenShardReader();
  TokenShardReader(TokenShardReader&&) noexcept;
  TokenShardReader& operator=(TokenShardReader&&) noexcept;

  const TokenShardInfo& info() const { return info_; }
  std::int64_t num_docs() const { return info_.n_docs; }
  std::int64_t num_tokens() const { return info_.n_tokens; }
  int vocab_size() const { return info_.vocab_size; }

  // Document i: its first token's position in the concatenated stream, and its length.
  std::int64_t doc_offset(std::int64_t i) const;
  std::int64_t doc_length(std::int64_t i) const;
  // The ids of document i (std::out_of_range when i is outside [0, num_docs)).
  std::vector<int> doc(std::int64_t i) const;
  // Copies tokens [begin, begin + n) of the concatenated stream into out (n ints), across documents.
  void read_tokens(std::int64_t begin, std::int64_t n, int* out) const;
  // One token of the concatenated stream.
  int token(std::int64_t pos) const;

  // The raw mapped token array (uint16_t* or uint32_t* per info().dtype), for zero-copy consumers.
  const void* data() const { return tokens_; }

 private:
  void close();
  TokenShardInfo info_;
  const void* tokens_ = nullptr;
  const std::uint64_t* offsets_ = nullptr;
  void* map_bin_ = nullptr;
  std::size_t map_bin_size_ = 0;
  void* map_idx_ = nullptr;
  std::size_t map_idx_size_ = 0;
};

}  // namespace moin
