// The router: a query's text -> the expert (cluster) whose centroid is nearest to its embedding.
//
// It embeds exactly as the partitioner did (the embedder state saved in the partition directory) and
// picks centroids by the partition's own rule, kmeans.h's nearest_centroid (distance 1 - <x, c> for
// spherical k-means, squared L2 otherwise; smaller is nearer, ties to the lower index). Routing a training
// document's full text therefore reproduces its (unbalanced) partition assignment exactly, ties included.
//
// Prefix routing (prefix_tokens = P > 0) embeds only the decoded first P tokens of the base tokenizer, so
// the router never sees past P tokens: what evaluation needs to measure perplexity on the rest without
// leakage.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moin/core/error.h"

namespace moin {

class Embedder;
class Tokenizer;

struct RouterOptions {
  int top_k = 1;
  int prefix_tokens = 0;
  std::string tokenizer;
  int batch_size = 256;

  template <class V> void visit(V& v) {
    v("top_k", top_k, "experts returned per query, nearest first");
    v("prefix_tokens", prefix_tokens, "route on the first P base-tokenizer tokens only (0 = the whole text)");
    v("tokenizer", tokenizer, "SentencePiece model for prefix routing (default: the partition's tokenizer)");
    v("batch_size", batch_size, "queries embedded and searched together");
  }
  void validate() const {
    require(top_k > 0, "router.top_k must be positive");
    require(prefix_tokens >= 0, "router.prefix_tokens must be >= 0");
    require(batch_size > 0, "router.batch_size must be positive");
  }
};

// One query's experts, nearest first, with their distances.
struct Route {
  std::vector<int> experts;
  std::vector<float> distances;
  int expert() const { return experts.empty() ? -1 : experts[0]; }
  float distance() const { return distances.empty() ? 0.0f : distances[0]; }
};

class Router {
 public:
  // centroids: row-major [k x d], d = embedder->dim(). tokenizer may be null (then no prefix routing).
  Router(std::unique_ptr<Embedder> embedder, std::vector<float> centroids, int k, bool spherical,
         std::shared_ptr<const Tokenizer> tokenizer = nullptr);
  ~Router();
  Router(Router&&) noexcept;
  Router& operator=(Router&&) noexcept;

  // Loads a partition directory: its embedder state, centroids and (for prefix routing) tokenizer; the
  // tokenizer is opts.tokenizer when given, else the one the partition manifest names. UserError naming
  // the missing file.
  static Router load(const std::string& partition_dir, const std::string& tokenizer_path = "");

  // The top_k nearest experts of each text (in order). Texts are embedded in batches of `batch_size`.
  std::vector<Route> route(const std::vector<std::string>& texts, int top_k = 1, int batch_size = 256) const;
  // Routes each text by its first prefix_tokens tokens (0 = whole text).
  std::vector<Route> route_prefix(const std::vector<std::string>& texts, int prefix_tokens, int top_k = 1,
                                  int batch_size = 256) const;
  // Routes already-embedded rows ([n x dim]); what route() does after embedding.
  std::vector<Route> search(const float* x, std::int64_t n, int top_k = 1) const;

  // The text of the first `tokens` tokens of `text` under the base tokenizer (the whole text when it is
  // shorter). UserError when the router has no tokenizer.
  std::string prefix(const std::string& text, int tokens) const;

  int num_experts() const { return k_; }
  int dim() const { return d_; }
  bool spherical() const { return spherical_; }
  const Embedder& embedder() const { return *embedder_; }
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }

 private:
  std::unique_ptr<Embedder> embedder_;
  std::vector<float> centroids_;  // [k x d]
  std::shared_ptr<const Tokenizer> tokenizer_;
  int k_ = 0, d_ = 0;
  bool spherical_ = true;
};

}  // namespace moin
