// The trainer's view of a partition: its clusters and their token shards, read through PartitionLayout.
#include "moin/train/partition_layout.h"

#include "moin/partition/layout.h"

namespace moin {

std::vector<int> partition_clusters(const std::string& dir) {
  const int k = PartitionLayout(dir).num_clusters();
  std::vector<int> out(static_cast<std::size_t>(k));
  for (int i = 0; i < k; ++i) out[static_cast<std::size_t>(i)] = i;
  return out;
}

std::string cluster_shard(const std::string& dir, int cluster, const std::string& split) {
  return PartitionLayout(dir).cluster_shard(cluster, split);
}

}  // namespace moin
