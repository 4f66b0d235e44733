#include "moin/train/data.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>

#include "moin/core/error.h"

namespace moin {

DocumentSet::DocumentSet(const std::vector<std::string>& shard_paths) {
  for (const auto& p : shard_paths) {
    shards_.emplace_back(p);
    starts_.push_back(starts_.back() + shards_.back().num_docs());
    num_tokens_ += shards_.back().num_tokens();
    vocab_size_ = std::max(vocab_size_, shards_.back().vocab_size());
  }
}

std::size_t DocumentSet::shard_of(std::int64_t doc) const {
  if (doc < 0 || doc >= num_docs()) throw std::out_of_range("document index out of range");
  auto it = std::upper_bound(starts_.begin(), starts_.end(), doc);
  return static_cast<std::size_t>(it - starts_.begin()) - 1;
}

std::int64_t DocumentSet::doc_length(std::int64_t doc) const {
  auto s = shard_of(doc);
  return shards_[s].doc_length(doc - starts_[s]);
}

void DocumentSet::read(std::int64_t doc, std::int64_t begin, std::int64_t n, int* out) const {
  auto s = shard_of(doc);
  const auto& shard = shards_[s];
  shard.read_tokens(shard.doc_offset(doc - starts_[s]) + begin, n, out);
}

nlohmann::json DataCursor::to_json() const {
  return {{"epoch", epoch}, {"index", index}, {"offset", offset}, {"tokens", tokens}};
}

DataCursor DataCursor::from_json(const nlohmann::json& j) {
  DataCursor c;
  c.epoch = j.at("epoch").get<std::int64_t>();
  c.index = j.at("index").get<std::int64_t>();
  c.offset = j.at("offset").get<std::int64_t>();
  c.tokens = j.at("tokens").get<std::int64_t>();
  return c;
}

namespace {
// splitmix64: a tiny generator whose output is fixed by its definition (std distributions are not).
struct SplitMix64 {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};
}  // namespace

std::vector<std::int64_t> document_order(std::int64_t n, std::uint64_t seed, std::int64_t epoch) {
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  SplitMix64 rng{seed * 0x2545F4914F6CDD1Dull + static_cast<std::uint64_t>(epoch) + 1};
  for (std::int64_t i = n - 1; i > 0; --i) {
    // Modulo bias is below 2^-40 for any realistic n; the order only needs to be fixed and well mixed.
    auto j = static_cast<std::int64_t>(rng.next() % static_cast<std::uint64_t>(i + 1));
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
  }
  return order;
}

PackedStream::PackedStream(const DocumentSet& docs, const PackingOptions& opts, const DataCursor& start)
    : docs_(docs), opts_(opts) {
  require(docs.num_docs() > 0, "training data: the token shards hold no documents");
  require(opts.seq_len > 0, "seq_len must be positive");
  seek(start);
}

void PackedStream::seek(const DataCursor& c) {
  require(c.epoch >= 0 && c.index >= 0 && c.index < docs_.num_docs() && c.offset >= 0,
          "data cursor outside the data (was the partition changed since the checkpoint?)");
  ensure_order(c.epoch);
  require(c.offset < frame_length(order_[static_cast<std::size_t>(c.index)]),
          "data cursor outside the data (was the partition changed since the checkpoint?)");
  cursor_ = c;
}

void PackedStream::ensure_order(std::int64_t epoch) {
  if (epoch == order_epoch_) return;
  if (opts_.shuffle) {
    order_ = document_order(docs_.num_docs(), opts_.seed, epoch);
  } else if (order_.empty()) {
    order_.resize(static_cast<std::size_t>(docs_.num_docs()));
    std::iota(order_.begin(), order_.end(), 0);
  }
  order_epoch_ = epoch;
}

std::int64_t PackedStream::frame_length(std::int64_t doc) const {
  return docs_.doc_length(doc) + 1 + (opts_.bos_id >= 0 ? 1 : 0);
}

std::int64_t PackedStream::epoch_tokens() const {
  return docs_.num_tokens() + docs_.num_docs() * (1 + (opts_.bos_id >= 0 ? 1 : 0));
}

void PackedStream::read(std::int64_t n, std::int64_t advance, std::int64_t* out) {
  DataCursor c = cursor_;
  DataCursor after = cursor_;
  std::vector<int> buf;
  std::int64_t done = 0;
  const std::int64_t bos = opts_.bos_id >= 0 ? 1 : 0;
  while (done < n) {
    if (done == advance) after = c;
    ensure_order(c.epoch);
    std::int64_t doc = order_[static_cast<std::size_t>(c.index)];
    std::int64_t len = docs_.doc_length(doc);
    std::int64_t frame = len + 1 + bos;
    // Copy up to the next checkpointable boundary: the end of this frame or the `advance` mark.
    std::int64_t limit = std::min(n - done, frame - c.offset);
    if (done < advance) limit = std::min(limit, advance - done);
    std::int64_t pos = c.offset;
    std::int64_t end = c.offset + limit;
    if (bos && pos == 0 && pos < end) {
      out[done++] = opts_.bos_id;
      ++pos;
    }
    std::int64_t body_end = std::min(end, bos + len);  // frame positions [bos, bos + len) are tokens
    if (pos < body_end) {
      buf.resize(static_cast<std::size_t>(body_end - pos));
      docs_.read(doc, pos - bos, body_end - pos, buf.data());
      for (int t : buf) out[done++] = t;
      pos = body_end;
    }
    if (pos < end) {  // the last frame position: EOS
      out[done++] = opts_.eos_id;
      ++pos;
    }
    c.tokens += limit;
    c.offset = pos;
    if (c.offset == frame) {
      c.offset = 0;
      if (++c.index == docs_.num_docs()) {
        c.index = 0;
        ++c.epoch;
      }
    }
  }
  if (done == advance) after = c;
  cursor_ = after;
}

torch::Tensor PackedStream::next(int batch) {
  const std::int64_t T = opts_.seq_len;
  auto out = torch::empty({batch, T + 1}, torch::kInt64);
  auto* p = out.data_ptr<std::int64_t>();
  for (int b = 0; b < batch; ++b) read(T + 1, T, p + b * (T + 1));
  return out;
}

torch::Tensor make_validation_set(const DocumentSet& docs, int seq_len, std::int64_t eval_tokens, int bos_id,
                                  int eos_id) {
  if (docs.num_docs() == 0) return torch::empty({0, seq_len + 1}, torch::kInt64);
  PackingOptions po;
  po.seq_len = seq_len;
  po.bos_id = bos_id;
  po.eos_id = eos_id;
  po.shuffle = true;
  po.seed = kValidationOrderSeed;
  PackedStream stream(docs, po);
  const std::int64_t total = stream.epoch_tokens();
  std::int64_t T = seq_len;
  std::int64_t n = std::max<std::int64_t>(1, eval_tokens / seq_len);
  std::int64_t avail = (total - 1) / T;  // whole sequences within one pass (no token seen twice)
  if (avail == 0) {
    T = total - 1;
    n = T > 0 ? 1 : 0;
  } else {
    n = std::min(n, avail);
  }
  auto out = torch::empty({n, T + 1}, torch::kInt64);
  auto* p = out.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < n; ++i) stream.read(T + 1, T, p + i * (T + 1));
  return out;
}

}  // namespace moin
