#include <gtest/gtest.h>

#include <cmath>
#include <mutex>
#include <random>

#include "moin/data/tokenizer.h"
#include "moin/partition/embedder.h"
#include "moin/route/lru_cache.h"
#include "moin/route/router.h"
#include "test_util.h"
#include "tokenizer_fixtures.h"

namespace {

using moin::test::TempDir;

// Hashed bag of words, L2-normalised; records every text it is asked to embed.
class WordHashEmbedder : public moin::Embedder {
 public:
  explicit WordHashEmbedder(int d) : d_(d) {}
  std::string type() const override { return "test"; }
  int dim() const override { return d_; }
  std::vector<float> embed(const std::vector<std::string>& texts) const override {
    std::vector<float> out(texts.size() * d_, 0.0f);
    for (std::size_t i = 0; i < texts.size(); ++i) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        seen.push_back(texts[i]);
      }
      std::istringstream ss(texts[i]);
      std::string w;
      while (ss >> w) out[i * d_ + std::hash<std::string>{}(w) % d_] += 1.0f;
      double n = 0;
      for (int j = 0; j < d_; ++j) n += out[i * d_ + j] * out[i * d_ + j];
      for (int j = 0; j < d_ && n > 0; ++j) out[i * d_ + j] /= static_cast<float>(std::sqrt(n));
    }
    return out;
  }
  void save(const std::string&) const override {}
  mutable std::vector<std::string> seen;

 private:
  int d_;
  mutable std::mutex mu_;
};

std::vector<float> random_rows(int n, int d, unsigned seed, bool normalise) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g;
  std::vector<float> x(static_cast<std::size_t>(n) * d);
  for (auto& v : x) v = g(rng);
  if (normalise)
    for (int i = 0; i < n; ++i) {
      double s = 0;
      for (int j = 0; j < d; ++j) s += x[i * d + j] * x[i * d + j];
      for (int j = 0; j < d; ++j) x[i * d + j] /= static_cast<float>(std::sqrt(s));
    }
  return x;
}

// Brute force, the independent reference: distances of one row to every centroid, as kmeans.h defines them.
std::vector<float> brute_distances(const float* x, const std::vector<float>& c, int k, int d, bool spherical) {
  std::vector<float> out(k);
  for (int j = 0; j < k; ++j) {
    double ip = 0, l2 = 0;
    for (int t = 0; t < d; ++t) {
      ip += x[t] * c[j * d + t];
      l2 += (x[t] - c[j * d + t]) * (x[t] - c[j * d + t]);
    }
    out[j] = spherical ? static_cast<float>(1.0 - ip) : static_cast<float>(l2);
  }
  return out;
}

class RouterSearch : public ::testing::TestWithParam<bool> {};

TEST_P(RouterSearch, TopKMatchesBruteForce) {
  const bool spherical = GetParam();
  const int k = 9, d = 16, n = 300;
  auto centroids = random_rows(k, d, 1, spherical);
  auto x = random_rows(n, d, 2, true);
  moin::Router router(std::make_unique<WordHashEmbedder>(d), centroids, k, spherical);
  auto routes = router.search(x.data(), n, 3);
  ASSERT_EQ(routes.size(), static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    auto ref = brute_distances(&x[i * d], centroids, k, d, spherical);
    std::vector<int> order(k);
    for (int j = 0; j < k; ++j) order[j] = j;
    std::sort(order.begin(), order.end(), [&](int a, int b) { return ref[a] < ref[b]; });
    ASSERT_EQ(routes[i].experts.size(), 3u);
    for (int j = 0; j < 3; ++j) {
      EXPECT_EQ(routes[i].experts[j], order[j]) << "row " << i << " rank " << j;
      EXPECT_NEAR(routes[i].distances[j], ref[order[j]], 1e-4);
    }
    EXPECT_EQ(routes[i].expert(), order[0]);
  }
}
INSTANTIATE_TEST_SUITE_P(Metric, RouterSearch, ::testing::Values(true, false));

TEST(Router, RouteTextsInOrderAcrossBatches) {
  const int k = 4, d = 32;
  auto centroids = random_rows(k, d, 3, true);
  auto emb = std::make_unique<WordHashEmbedder>(d);
  WordHashEmbedder reference(d);
  moin::Router router(std::move(emb), centroids, k, true);
  std::vector<std::string> texts;
  for (int i = 0; i < 37; ++i) texts.push_back("doc " + std::to_string(i) + " word" + std::to_string(i % 5));
  auto routes = router.route(texts, 1, /*batch_size=*/8);
  ASSERT_EQ(routes.size(), texts.size());
  auto x = reference.embed(texts);
  for (std::size_t i = 0; i < texts.size(); ++i) {
    auto ref = brute_distances(&x[i * d], centroids, k, d, true);
    EXPECT_EQ(routes[i].expert(), std::min_element(ref.begin(), ref.end()) - ref.begin());
  }
}

TEST(Router, RejectsCentroidsOfTheWrongDimension) {
  EXPECT_THROW(moin::Router(std::make_unique<WordHashEmbedder>(8), std::vector<float>(3 * 7), 3, true),
               moin::UserError);
}

std::shared_ptr<const moin::Tokenizer> tiny_tokenizer(const TempDir& dir) {
  return std::make_shared<const moin::Tokenizer>(moin::Tokenizer::load(moin::test::train_tiny_tokenizer(dir)));
}

// The router must never see past the first P tokens: the embedder receives at most P tokens of text, and
// documents that share their first P tokens route identically whatever follows.
TEST(Router, PrefixRoutingNeverReadsPastPTokens) {
  TempDir dir;
  auto tok = tiny_tokenizer(dir);
  const int k = 5, d = 32, P = 6;
  auto emb = std::make_unique<WordHashEmbedder>(d);
  auto* spy = emb.get();
  moin::Router router(std::move(emb), random_rows(k, d, 4, true), k, true, tok);
  std::string head = "the cat sat on a mat and the dog ran far away";
  std::vector<std::string> texts = {head + " home home home", head + " dog dog cat cat mat", "a dog", head};
  auto routes = router.route_prefix(texts, P, 2);
  ASSERT_EQ(spy->seen.size(), texts.size());
  for (const auto& s : spy->seen) EXPECT_LE(tok->encode(s).size(), static_cast<std::size_t>(P)) << s;
  EXPECT_EQ(spy->seen[0], spy->seen[1]);
  EXPECT_EQ(spy->seen[2], "a dog");  // shorter than P: the whole text
  auto first_p = tok->encode(head);
  first_p.resize(P);
  EXPECT_EQ(spy->seen[3], tok->decode(first_p));
  EXPECT_EQ(routes[0].experts, routes[1].experts);
  EXPECT_EQ(routes[0].distances, routes[1].distances);
  // P = 0 routes on the whole text.
  spy->seen.clear();
  router.route_prefix({texts[0]}, 0);
  EXPECT_EQ(spy->seen.at(0), texts[0]);
}

TEST(Router, PrefixWithoutTokenizerIsAUserError) {
  moin::Router router(std::make_unique<WordHashEmbedder>(4), random_rows(2, 4, 5, true), 2, true);
  EXPECT_THROW(router.route_prefix({"a b c"}, 2), moin::UserError);
}

TEST(LruCache, EvictsTheLeastRecentlyUsed) {
  std::vector<int> loads;
  moin::LruCache<std::string> cache(2, [&](int key) {
    loads.push_back(key);
    return "adapter" + std::to_string(key);
  });
  EXPECT_EQ(cache.get(1), "adapter1");
  EXPECT_EQ(cache.get(2), "adapter2");
  EXPECT_EQ(cache.get(1), "adapter1");  // hit: 1 is now the most recent
  EXPECT_EQ(cache.get(3), "adapter3");  // full: evicts 2, the least recently used
  EXPECT_TRUE(cache.contains(1));
  EXPECT_FALSE(cache.contains(2));
  EXPECT_TRUE(cache.contains(3));
  EXPECT_EQ(cache.keys(), (std::vector<int>{3, 1}));
  cache.get(2);                          // miss again, evicts 1
  EXPECT_FALSE(cache.contains(1));
  EXPECT_EQ(loads, (std::vector<int>{1, 2, 3, 2}));
  EXPECT_EQ(cache.stats().hits, 1);
  EXPECT_EQ(cache.stats().misses, 4);
  EXPECT_EQ(cache.stats().evictions, 2);
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_NEAR(cache.stats().hit_rate(), 0.2, 1e-12);
  EXPECT_THROW(moin::LruCache<int>(0, [](int k) { return k; }), moin::UserError);
}

}  // namespace
