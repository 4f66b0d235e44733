// Tiny synthetic partitions for the trainer's tests: clusters/<k>/train|valid token shards and a manifest.
#pragma once
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "moin/core/fs.h"
#include "moin/data/token_shard.h"
#include "moin/partition/layout.h"

namespace moin::test {

// Cluster k's documents draw tokens from their own band of the vocabulary ([4 + k * band, 4 + (k+1) * band))
// with a repeating pattern, so a model can learn each cluster and the clusters differ.
inline std::vector<std::vector<int>> cluster_docs(int k, int n_docs, int vocab, int k_total, unsigned seed) {
  std::mt19937 rng(seed * 7919u + static_cast<unsigned>(k));
  int band = (vocab - 4) / k_total;
  std::vector<std::vector<int>> docs(static_cast<std::size_t>(n_docs));
  for (auto& d : docs) {
    d.resize(5 + rng() % 40);
    int start = static_cast<int>(rng() % static_cast<unsigned>(band));
    for (std::size_t i = 0; i < d.size(); ++i)
      d[i] = 4 + k * band + static_cast<int>((static_cast<unsigned>(start) + i * (static_cast<unsigned>(k) + 1)) %
                                             static_cast<unsigned>(band));
  }
  return docs;
}

inline void write_shard(const std::string& stem, const std::vector<std::vector<int>>& docs, int vocab) {
  TokenShardWriter w(stem, vocab);
  for (const auto& d : docs) w.append(d);
  w.finish();
}

// dir/manifest.json + dir/clusters/<k>/{train,valid} for k < k_total.
inline void write_partition(const std::string& dir, int k_total, int vocab, int train_docs = 60, int valid_docs = 12,
                            unsigned seed = 1) {
  for (int k = 0; k < k_total; ++k) {
    auto base = std::filesystem::path(dir) / "clusters" / std::to_string(k);
    std::filesystem::create_directories(base);
    write_shard((base / "train").string(), cluster_docs(k, train_docs, vocab, k_total, seed), vocab);
    write_shard((base / "valid").string(), cluster_docs(k, valid_docs, vocab, k_total, seed + 100), vocab);
  }
  moin::PartitionLayout(dir).write_manifest({{"k", k_total}});
}

}  // namespace moin::test
