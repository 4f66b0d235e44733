// The partition folder's layout: where each file lives, and manifest.json, the one file that says a
// partition is finished and what it holds. `moin partition` writes it (partition_merge, last); the trainer,
// the launcher and the router read it through here and nowhere else.
//
//   DIR/partition.config.json    the options of the run (fit writes it first)
//   DIR/fit.json                 fit's marker: the sample, the embedder type, k, top terms
//   DIR/embedder/                the fitted embedder's state (embedder.json + its files)
//   DIR/centroids.npy            k-means centroids, float32 [k, d]
//   DIR/kmeans.json              {"k", "d", "spherical", "objective", ...} (kmeans.h)
//   DIR/work/shard-SSSSS-of-NNNNN/   one assign slice (docs.jsonl, tokens.*, ingest.json, done.json)
//   DIR/clusters/<c>/{train,valid}.{bin,idx,json}   token shards of cluster c (data/token_shard.h)
//   DIR/assignments.jsonl, report.json, report.md
//   DIR/manifest.json            {"format": "moin-partition", "schema_version": 1, "k", "embedder",
//                                "centroids", "tokenizer", "clusters": [...], counts, ...}
//
// A manifest of another format, or of a newer schema_version than this build knows, is refused.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace moin {

class PartitionLayout {
 public:
  static constexpr const char* kFormat = "moin-partition";
  static constexpr int kSchemaVersion = 1;  // the version this build writes and the newest it reads

  explicit PartitionLayout(std::string dir) : dir_(std::move(dir)) {}
  const std::string& dir() const { return dir_; }

  std::string manifest_file() const { return path("manifest.json"); }
  std::string config_file() const { return path("partition.config.json"); }
  std::string fit_file() const { return path("fit.json"); }
  std::string embedder_dir() const { return path("embedder"); }
  std::string centroids_dir() const { return dir_; }  // centroids.npy + kmeans.json (kmeans.h's save_kmeans)
  std::string work_dir() const { return path("work"); }
  // work/shard-SSSSS-of-NNNNN: slice `shard` of `num_shards` (the assign step's output).
  std::string slice_dir(int shard, int num_shards) const;
  static std::string slice_name(int shard, int num_shards);
  // clusters/<c>/<split>, relative to the folder (as the manifest records it) and as a path.
  static std::string cluster_shard_rel(int cluster, const std::string& split);
  std::string cluster_shard(int cluster, const std::string& split) const { return path(cluster_shard_rel(cluster, split)); }

  bool finished() const;  // manifest.json exists
  // manifest.json, checked: its format and schema_version, and k > 0. UserError when it is missing (the
  // partition is not merged yet), of another format or of a newer version.
  nlohmann::json read_manifest() const;
  // Stamps the format and schema_version on `manifest` and writes it atomically (the partition's marker).
  void write_manifest(nlohmann::json manifest) const;

  // The number of clusters, from the manifest.
  int num_clusters() const;
  // The base tokenizer the partition was tokenised with: the manifest's, else (a fitted but unmerged
  // partition) partition.config.json's; relative paths that do not exist as given are taken relative to
  // the folder. "" when neither names one.
  std::string tokenizer() const;

 private:
  std::string path(const std::string& rel) const;
  std::string dir_;
};

}  // namespace moin
