// Training data: documents of one or more token shards, packed into fixed-length sequences.
//
// The stream is the documents of every shard in an order that depends only on (seed, epoch): each epoch
// is a fresh permutation of all documents (Fisher-Yates on splitmix64, the same on every machine and
// compiler). Each document is framed as [BOS] tokens EOS and the frames are concatenated; a training
// sequence is seq_len + 1 consecutive stream tokens (inputs and shifted targets), and consecutive
// sequences start seq_len tokens apart, so no token is skipped and none is a target twice.
//
// The position in the stream is a DataCursor (epoch, index in the epoch's order, offset inside the
// framed document): saving it in a checkpoint and seeking back to it reproduces the rest of the stream
// exactly, so the data order needs no RNG state of its own.
#pragma once
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "moin/data/token_shard.h"

namespace moin {

// Several token shards seen as one list of documents (shard 0's, then shard 1's, ...).
class DocumentSet {
 public:
  explicit DocumentSet(const std::vector<std::string>& shard_paths);
  std::int64_t num_docs() const { return starts_.back(); }
  std::int64_t num_tokens() const { return num_tokens_; }
  int vocab_size() const { return vocab_size_; }  // the largest of the shards'
  std::int64_t doc_length(std::int64_t doc) const;
  // Copies tokens [begin, begin + n) of document `doc` into out.
  void read(std::int64_t doc, std::int64_t begin, std::int64_t n, int* out) const;
  const std::vector<TokenShardReader>& shards() const { return shards_; }

 private:
  std::size_t shard_of(std::int64_t doc) const;
  std::vector<TokenShardReader> shards_;
  std::vector<std::int64_t> starts_{0};  // first global document index of each shard, then the total
  std::int64_t num_tokens_ = 0;
  int vocab_size_ = 0;
};

struct DataCursor {
  std::int64_t epoch = 0;
  std::int64_t index = 0;   // position in the epoch's document order
  std::int64_t offset = 0;  // token inside the framed document ([BOS] doc EOS)
  std::int64_t tokens = 0;  // stream tokens consumed so far (informative)

  nlohmann::json to_json() const;
  static DataCursor from_json(const nlohmann::json& j);
  bool operator==(const DataCursor& o) const {
    return epoch == o.epoch && index == o.index && offset == o.offset && tokens == o.tokens;
  }
};

struct PackingOptions {
  int seq_len = 256;
  int bos_id = 1;  // -1: no BOS before documents
  int eos_id = 2;
  bool shuffle = true;
  std::uint64_t seed = 0;
};

// The permutation of n documents used in `epoch` (identity without shuffle).
std::vector<std::int64_t> document_order(std::int64_t n, std::uint64_t seed, std::int64_t epoch);

class PackedStream {
 public:
  // UserError when the set has no documents.
  PackedStream(const DocumentSet& docs, const PackingOptions& opts, const DataCursor& start = {});

  // batch sequences of seq_len + 1 tokens, [batch, seq_len + 1] int64 on the CPU; advances the cursor by
  // batch x seq_len tokens.
  torch::Tensor next(int batch);
  // Reads n tokens from the cursor without moving it past `advance` of them (advance <= n).
  void read(std::int64_t n, std::int64_t advance, std::int64_t* out);

  const DataCursor& cursor() const { return cursor_; }
  void seek(const DataCursor& c);
  // Tokens in one pass over every document with its framing.
  std::int64_t epoch_tokens() const;

 private:
  std::int64_t frame_length(std::int64_t doc) const;
  void ensure_order(std::int64_t epoch);

  const DocumentSet& docs_;
  PackingOptions opts_;
  DataCursor cursor_;
  std::int64_t order_epoch_ = -1;
  std::vector<std::int64_t> order_;
};

// The document order of every validation set: one permutation with this constant seed, the same in every
// run (base, experts, baselines), whatever the training seed.
constexpr std::uint64_t kValidationOrderSeed = 0x5EED0F7A11DA7Eull;

// A fixed validation set: the first sequences of a split's stream with its documents in the order
// document_order(n, kValidationOrderSeed, 0), [n, seq_len + 1] int64. The permutation matters: a corpus
// is often sorted by source, and the head of the unshuffled split would be one source, not the cluster.
// n = eval_tokens / seq_len (at least 1), fewer when the split is smaller; a split shorter than one
// sequence gives one shorter sequence. Empty (0 rows) when the split has no tokens.
torch::Tensor make_validation_set(const DocumentSet& docs, int seq_len, std::int64_t eval_tokens, int bos_id,
                                  int eos_id);

}  // namespace moin
