// Where the trainer finds a partition's clusters (the layout is partition/layout.h's PartitionLayout):
//   DIR/manifest.json            the number of clusters, among other things
//   DIR/clusters/<k>/train.*     token shard of cluster k's training documents (data/token_shard.h)
//   DIR/clusters/<k>/valid.*     token shard of its validation documents
#pragma once
#include <string>
#include <vector>

namespace moin {

// The cluster indices of a partition, 0 .. K-1, from its manifest. UserError when the folder holds no
// finished partition, or a manifest of another format or a newer version.
std::vector<int> partition_clusters(const std::string& partition_dir);

// DIR/clusters/<k>/<split> (a token shard stem: split is "train" or "valid").
std::string cluster_shard(const std::string& partition_dir, int cluster, const std::string& split);

}  // namespace moin
