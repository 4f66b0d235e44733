// Where the trainer finds a partition's clusters: `moin partition` writes
//   DIR/manifest.json            (the number of clusters, among other things)
//   DIR/clusters/<k>/train.*     token shard of cluster k's training documents (data/token_shard.h)
//   DIR/clusters/<k>/valid.*     token shard of its validation documents
#pragma once
#include <string>
#include <vector>

namespace moin {

// The cluster indices of a partition, 0 .. K-1: from manifest.json ("num_clusters", "k" or a "clusters"
// array), else from the clusters/<k> folders. UserError when the folder holds no partition.
std::vector<int> partition_clusters(const std::string& partition_dir);

// DIR/clusters/<k>/<split> (a token shard stem: split is "train" or "valid").
std::string cluster_shard(const std::string& partition_dir, int cluster, const std::string& split);

}  // namespace moin
