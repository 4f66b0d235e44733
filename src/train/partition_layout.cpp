#include "moin/train/partition_layout.h"

#include <algorithm>
#include <filesystem>

#include "moin/core/error.h"
#include "moin/core/fs.h"

namespace moin {

namespace stdfs = std::filesystem;

std::vector<int> partition_clusters(const std::string& dir) {
  require(stdfs::is_directory(dir), "partition folder " + dir + " does not exist");
  int k = -1;
  stdfs::path manifest = stdfs::path(dir) / "manifest.json";
  if (stdfs::exists(manifest)) {
    auto j = fs::read_json(manifest);
    for (const char* key : {"num_clusters", "k", "n_clusters"})
      if (j.contains(key) && j[key].is_number_integer()) {
        k = j[key].get<int>();
        break;
      }
    if (k < 0 && j.contains("clusters") && j["clusters"].is_array()) k = static_cast<int>(j["clusters"].size());
  }
  if (k < 0) {  // no manifest (or none we understand): count the cluster folders
    k = 0;
    stdfs::path clusters = stdfs::path(dir) / "clusters";
    while (stdfs::is_directory(clusters / std::to_string(k))) ++k;
  }
  require(k > 0, "partition folder " + dir + " holds no clusters (no manifest.json and no clusters/0)");
  std::vector<int> out(static_cast<std::size_t>(k));
  for (int i = 0; i < k; ++i) out[static_cast<std::size_t>(i)] = i;
  return out;
}

std::string cluster_shard(const std::string& dir, int cluster, const std::string& split) {
  return (stdfs::path(dir) / "clusters" / std::to_string(cluster) / split).string();
}

}  // namespace moin
