// Router::load: a partition directory's embedder state, centroids and tokenizer. In its own file so code
// that builds a Router from parts does not link the embedder implementations.
#include <spdlog/spdlog.h>

#include <filesystem>

#include "moin/data/tokenizer.h"
#include "moin/partition/embedder.h"
#include "moin/partition/kmeans.h"
#include "moin/partition/layout.h"
#include "moin/route/router.h"

namespace moin {

namespace stdfs = std::filesystem;

Router Router::load(const std::string& dir, const std::string& tokenizer_path) {
  require(stdfs::is_directory(dir), "router: partition directory " + dir + " does not exist");
  const PartitionLayout layout(dir);
  require(stdfs::exists(stdfs::path(layout.embedder_dir()) / "embedder.json"),
          "router: " + dir + " holds no embedder state (embedder/embedder.json)");
  auto embedder = load_embedder(layout.embedder_dir());
  require(stdfs::exists(stdfs::path(layout.centroids_dir()) / "kmeans.json"),
          "router: " + dir + " holds no centroids (kmeans.json + centroids.npy)");
  KMeansResult km = load_kmeans(layout.centroids_dir());

  // The base tokenizer the partition tokenised with, unless one is given.
  std::shared_ptr<const Tokenizer> tok;
  std::string tp = tokenizer_path.empty() ? layout.tokenizer() : tokenizer_path;
  if (!tp.empty()) tok = std::make_shared<const Tokenizer>(Tokenizer::load(tp));
  spdlog::debug("router: {} experts, {}-dim {} embeddings, {}", km.k, km.d, embedder->type(),
                km.spherical ? "inner product" : "L2");
  return Router(std::move(embedder), std::move(km.centroids), km.k, km.spherical, std::move(tok));
}

}  // namespace moin
