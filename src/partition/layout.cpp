// The partition folder's layout and its manifest (see layout.h).
#include "moin/partition/layout.h"

#include <cstdio>
#include <filesystem>

#include "moin/core/error.h"
#include "moin/core/fs.h"

namespace moin {

namespace stdfs = std::filesystem;
using json = nlohmann::json;

std::string PartitionLayout::path(const std::string& rel) const { return (stdfs::path(dir_) / rel).string(); }

std::string PartitionLayout::slice_name(int shard, int num_shards) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "shard-%05d-of-%05d", shard, num_shards);
  return buf;
}

std::string PartitionLayout::slice_dir(int shard, int num_shards) const {
  return (stdfs::path(dir_) / "work" / slice_name(shard, num_shards)).string();
}

std::string PartitionLayout::cluster_shard_rel(int cluster, const std::string& split) {
  return "clusters/" + std::to_string(cluster) + "/" + split;
}

bool PartitionLayout::finished() const { return stdfs::exists(manifest_file()); }

json PartitionLayout::read_manifest() const {
  require(stdfs::is_directory(dir_), "partition folder " + dir_ + " does not exist");
  const std::string file = manifest_file();
  if (!stdfs::exists(file))
    throw UserError(dir_ + " holds no finished partition (" + file +
                    " is missing): run `moin partition` (or its merge step) first");
  json m = fs::read_json(file);
  if (!m.is_object() || m.value("format", std::string()) != kFormat)
    throw UserError(file + ": not a partition manifest (its \"format\" is not \"" + kFormat + "\")");
  if (!m.contains("schema_version") || !m["schema_version"].is_number_integer())
    throw UserError(file + ": no integer \"schema_version\"");
  const int v = m["schema_version"].get<int>();
  if (v < 1 || v > kSchemaVersion)
    throw UserError(file + ": schema_version " + std::to_string(v) + " is not one this build reads (1.." +
                    std::to_string(kSchemaVersion) + "); use a newer moin");
  if (!m.contains("k") || !m["k"].is_number_integer() || m["k"].get<int>() <= 0)
    throw UserError(file + ": no positive integer \"k\" (the number of clusters)");
  if (m.contains("clusters"))
    require(m["clusters"].is_array() && m["clusters"].size() == m["k"].get<std::size_t>(),
            file + ": \"clusters\" does not list k = " + std::to_string(m["k"].get<int>()) + " clusters");
  return m;
}

void PartitionLayout::write_manifest(json manifest) const {
  manifest["format"] = kFormat;
  manifest["schema_version"] = kSchemaVersion;
  fs::write_json_atomic(manifest_file(), manifest);
}

int PartitionLayout::num_clusters() const { return read_manifest()["k"].get<int>(); }

std::string PartitionLayout::tokenizer() const {
  std::string tp;
  // A finished partition's manifest names it as {"path": ...}; a fitted one's options as a string.
  if (finished()) {
    json m = read_manifest();
    if (m.contains("tokenizer") && m["tokenizer"].is_object()) tp = m["tokenizer"].value("path", std::string());
  }
  if (tp.empty() && stdfs::exists(config_file())) {
    json c = fs::read_json(config_file());
    if (c.contains("tokenizer") && c["tokenizer"].is_string()) tp = c["tokenizer"].get<std::string>();
  }
  if (!tp.empty() && stdfs::path(tp).is_relative() && !stdfs::exists(tp)) tp = path(tp);
  return tp;
}

}  // namespace moin
