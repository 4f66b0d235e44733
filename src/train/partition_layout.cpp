// The trainer's view of a partition: its clusters and their token shards, read through PartitionLayout.
#include "moin/train/partition_layout.h"

#include <filesystem>

#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "moin/data/token_shard.h"
#include "moin/partition/layout.h"

namespace moin {

namespace stdfs = std::filesystem;

std::vector<int> partition_clusters(const std::string& dir) {
  const int k = PartitionLayout(dir).num_clusters();
  std::vector<int> out(static_cast<std::size_t>(k));
  for (int i = 0; i < k; ++i) out[static_cast<std::size_t>(i)] = i;
  return out;
}

std::string cluster_shard(const std::string& dir, int cluster, const std::string& split) {
  return PartitionLayout(dir).cluster_shard(cluster, split);
}

PartitionShards::PartitionShards(const std::string& dir) : dir_(dir) {
  const PartitionLayout layout(dir);
  const auto manifest = layout.read_manifest();
  const int k = manifest["k"].get<int>();
  for (int i = 0; i < k; ++i) clusters_.push_back(i);
  if (manifest.contains("clusters")) entries_ = manifest["clusters"];
}

ClusterShard PartitionShards::shard(int cluster, const std::string& split) const {
  const PartitionLayout layout(dir_);
  const std::string manifest = layout.manifest_file();
  const std::string what = "cluster " + std::to_string(cluster) + "'s " + split + " shard";
  ClusterShard s;
  std::string rel = PartitionLayout::cluster_shard_rel(cluster, split);
  const nlohmann::json* entry = nullptr;
  if (entries_.is_array() && cluster >= 0 && cluster < static_cast<int>(entries_.size()) &&
      entries_[static_cast<std::size_t>(cluster)].is_object() && entries_[static_cast<std::size_t>(cluster)].contains(split))
    entry = &entries_[static_cast<std::size_t>(cluster)][split];
  if (entry) {
    require(entry->is_object(), manifest + ": " + what + " is not an object");
    if (entry->contains("path")) {
      require((*entry)["path"].is_string(), manifest + ": " + what + "'s \"path\" is not a string");
      rel = (*entry)["path"].get<std::string>();
    }
    const stdfs::path p(rel);
    bool leaves = p.is_absolute() || p.has_root_name() || rel.empty();
    for (const auto& part : p) leaves = leaves || part == "..";
    require(!leaves, manifest + ": " + what + " is recorded as \"" + rel +
                         "\", which is not a path inside the partition folder: only its own shards are read");
    auto count = [&](const char* key) {
      const auto it = entry->find(key);
      return it != entry->end() && it->is_number_integer() ? it->get<std::int64_t>() : std::int64_t{-1};
    };
    s.documents = count("documents");
    s.tokens = count("tokens");
  }
  const std::string stem = (stdfs::path(dir_) / rel).string();
  if (!stdfs::exists(token_shard_stem(stem) + ".json")) {
    require(s.documents <= 0 && s.tokens <= 0,
            what + " " + stem + " is missing, but " + manifest + " lists " + std::to_string(s.tokens) + " tokens in " +
                std::to_string(s.documents) + " documents for it: the partition folder is damaged (re-create it with "
                "`moin partition`, or restore the folder)");
    return s;  // no documents, no shard
  }
  s.stem = stem;
  if (s.documents >= 0 || s.tokens >= 0) {
    const auto info = fs::read_json(token_shard_stem(stem) + ".json");
    const auto docs = info.value("n_docs", std::int64_t{-1}), tokens = info.value("n_tokens", std::int64_t{-1});
    require((s.documents < 0 || docs == s.documents) && (s.tokens < 0 || tokens == s.tokens),
            what + " " + stem + " holds " + std::to_string(tokens) + " tokens in " + std::to_string(docs) +
                " documents, but " + manifest + " lists " + std::to_string(s.tokens) + " in " +
                std::to_string(s.documents) + ": the shard is not the one the partition wrote");
  }
  return s;
}

}  // namespace moin
