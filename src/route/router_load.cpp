// Router::load: a partition directory's embedder state, centroids and tokenizer. In its own file so code
// that builds a Router from parts does not link the embedder implementations.
#include <spdlog/spdlog.h>

#include <filesystem>

#include "moin/core/fs.h"
#include "moin/data/tokenizer.h"
#include "moin/partition/embedder.h"
#include "moin/partition/kmeans.h"
#include "moin/route/router.h"

namespace moin {

namespace stdfs = std::filesystem;

namespace {
// The first existing path among the candidates, or "".
std::string first_existing(const std::vector<stdfs::path>& candidates) {
  for (const auto& p : candidates)
    if (stdfs::exists(p)) return p.string();
  return "";
}
}  // namespace

Router Router::load(const std::string& dir, const std::string& tokenizer_path) {
  require(stdfs::is_directory(dir), "router: partition directory " + dir + " does not exist");

  std::string emb_json = first_existing({stdfs::path(dir) / "embedder" / "embedder.json", stdfs::path(dir) / "embedder.json"});
  require(!emb_json.empty(), "router: " + dir + " holds no embedder state (embedder/embedder.json)");
  auto embedder = load_embedder(stdfs::path(emb_json).parent_path().string());

  std::string kdir = first_existing({stdfs::path(dir) / "kmeans.json", stdfs::path(dir) / "kmeans" / "kmeans.json"});
  require(!kdir.empty(), "router: " + dir + " holds no centroids (kmeans.json + centroids.npy)");
  KMeansResult km = load_kmeans(stdfs::path(kdir).parent_path().string());

  std::shared_ptr<const Tokenizer> tok;
  std::string tp = tokenizer_path;
  // The base tokenizer the partition tokenised with: named in manifest.json or partition.config.json.
  for (const char* file : {"manifest.json", "partition.config.json"}) {
    if (!tp.empty()) break;
    auto p = stdfs::path(dir) / file;
    if (!stdfs::exists(p)) continue;
    auto j = fs::read_json(p);
    if (j.contains("tokenizer") && j["tokenizer"].is_string()) tp = j["tokenizer"].get<std::string>();
    if (j.contains("tokenizer") && j["tokenizer"].is_object()) tp = j["tokenizer"].value("path", std::string());
    if (!tp.empty() && stdfs::path(tp).is_relative() && !stdfs::exists(tp)) tp = (stdfs::path(dir) / tp).string();
  }
  if (!tp.empty()) tok = std::make_shared<const Tokenizer>(Tokenizer::load(tp));
  spdlog::debug("router: {} experts, {}-dim {} embeddings, {}", km.k, km.d, embedder->type(),
                km.spherical ? "inner product" : "L2");
  return Router(std::move(embedder), std::move(km.centroids), km.k, km.spherical, std::move(tok));
}

}  // namespace moin
