// Nearest-centroid routing by the partition's own rule (kmeans.h's nearest_centroids; see router.h).
#include "moin/route/router.h"

#include <algorithm>

#include "moin/data/tokenizer.h"
#include "moin/partition/embedder.h"
#include "moin/partition/kmeans.h"

namespace moin {

Router::Router(std::unique_ptr<Embedder> embedder, std::vector<float> centroids, int k, bool spherical,
               std::shared_ptr<const Tokenizer> tokenizer)
    : embedder_(std::move(embedder)), centroids_(std::move(centroids)), tokenizer_(std::move(tokenizer)), k_(k),
      spherical_(spherical) {
  require(embedder_ != nullptr, "router: no embedder");
  require(k > 0, "router: no centroids");
  d_ = embedder_->dim();
  require(centroids_.size() == static_cast<std::size_t>(k) * static_cast<std::size_t>(d_),
          "router: the centroids are " + std::to_string(centroids_.size() / std::max(k, 1)) +
              "-dimensional but the embedder gives " + std::to_string(d_) + " dimensions");
}

Router::~Router() = default;
Router::Router(Router&&) noexcept = default;
Router& Router::operator=(Router&&) noexcept = default;

std::vector<Route> Router::search(const float* x, std::int64_t n, int top_k) const {
  top_k = std::clamp(top_k, 1, k_);
  std::vector<Route> out(static_cast<std::size_t>(n));
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    auto& r = out[static_cast<std::size_t>(i)];
    r.experts.resize(static_cast<std::size_t>(top_k));
    r.distances.resize(static_cast<std::size_t>(top_k));
    nearest_centroids(x + i * d_, centroids_.data(), k_, d_, spherical_, top_k, r.experts.data(), r.distances.data());
  }
  return out;
}

std::vector<Route> Router::route(const std::vector<std::string>& texts, int top_k, int batch_size) const {
  std::vector<Route> out;
  out.reserve(texts.size());
  batch_size = std::max(batch_size, 1);
  for (std::size_t b = 0; b < texts.size(); b += static_cast<std::size_t>(batch_size)) {
    std::size_t e = std::min(texts.size(), b + static_cast<std::size_t>(batch_size));
    std::vector<std::string> batch(texts.begin() + static_cast<std::ptrdiff_t>(b),
                                   texts.begin() + static_cast<std::ptrdiff_t>(e));
    auto x = embedder_->embed(batch);
    auto r = search(x.data(), static_cast<std::int64_t>(batch.size()), top_k);
    for (auto& one : r) out.push_back(std::move(one));
  }
  return out;
}

std::string Router::prefix(const std::string& text, int tokens) const {
  require(tokenizer_ != nullptr, "router: prefix routing needs a tokenizer (--tokenizer, or the partition's)");
  auto ids = tokenizer_->encode(text);
  if (static_cast<std::int64_t>(ids.size()) <= tokens) return text;
  ids.resize(static_cast<std::size_t>(tokens));
  return tokenizer_->decode(ids);
}

std::vector<Route> Router::route_prefix(const std::vector<std::string>& texts, int prefix_tokens, int top_k,
                                        int batch_size) const {
  if (prefix_tokens <= 0) return route(texts, top_k, batch_size);
  std::vector<std::string> cut;
  cut.reserve(texts.size());
  for (const auto& t : texts) cut.push_back(prefix(t, prefix_tokens));
  return route(cut, top_k, batch_size);
}

}  // namespace moin
