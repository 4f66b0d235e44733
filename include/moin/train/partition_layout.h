// Where the trainer finds a partition's clusters (the layout is partition/layout.h's PartitionLayout):
//   DIR/manifest.json            the number of clusters, and each cluster's shards with their counts
//   DIR/clusters/<k>/train.*     token shard of cluster k's training documents (data/token_shard.h)
//   DIR/clusters/<k>/valid.*     token shard of its validation documents
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace moin {

// The cluster indices of a partition, 0 .. K-1, from its manifest. UserError when the folder holds no
// finished partition, or a manifest of another format or a newer version.
std::vector<int> partition_clusters(const std::string& partition_dir);

// DIR/clusters/<k>/<split> (a token shard stem: split is "train" or "valid").
std::string cluster_shard(const std::string& partition_dir, int cluster, const std::string& split);

// One cluster's split as the manifest records it. documents and tokens are -1 when the manifest lists no
// counts (a hand-made manifest holding only k).
struct ClusterShard {
  std::string stem;  // the shard's path without extension; "" when it has no documents (no shard written)
  std::int64_t documents = -1, tokens = -1;
};

// A partition's clusters and their shards, from its manifest read once (a manifest of 5,000 clusters is
// megabytes), checked so that lost or foreign data is an error, never an empty cluster:
//   - a recorded path must be relative and stay inside the folder (no "..", not absolute);
//   - a shard the manifest lists documents for must exist and hold the documents and tokens it lists.
class PartitionShards {
 public:
  explicit PartitionShards(const std::string& dir);
  const std::vector<int>& clusters() const { return clusters_; }
  // UserError as above.
  ClusterShard shard(int cluster, const std::string& split) const;

 private:
  std::string dir_;
  std::vector<int> clusters_;
  nlohmann::json entries_;  // the manifest's "clusters" (null without one)
};

}  // namespace moin
