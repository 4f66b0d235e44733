// K-means and assignment against brute-force computations written out here.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "moin/core/error.h"
#include "moin/core/cluster_metrics.h"
#include "moin/partition/kmeans.h"
#include "test_util.h"

using namespace moin;

namespace {

std::vector<float> random_points(std::int64_t n, int d, std::uint64_t seed, bool unit) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g;
  std::vector<float> x(std::size_t(n) * d);
  for (auto& v : x) v = g(rng);
  if (unit)
    for (std::int64_t i = 0; i < n; ++i) {
      double s = 0;
      for (int j = 0; j < d; ++j) s += double(x[i * d + j]) * x[i * d + j];
      for (int j = 0; j < d; ++j) x[i * d + j] = float(x[i * d + j] / std::sqrt(s));
    }
  return x;
}

// Distance as the API defines it, in double: squared L2, or 1 - <x, c> for spherical.
double brute_distance(const float* x, const float* c, int d, bool spherical) {
  double s = 0;
  for (int j = 0; j < d; ++j) s += spherical ? double(x[j]) * c[j] : (double(x[j]) - c[j]) * (double(x[j]) - c[j]);
  return spherical ? 1.0 - s : s;
}

// Blobs around `k` well-separated centres; returns points and their true blob.
std::vector<float> blobs(int k, int per, int d, std::vector<std::int32_t>& truth, std::uint64_t seed) {
  auto centres = random_points(k, d, seed, true);
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<float> g(0.f, 0.05f);
  std::vector<float> x;
  for (int p = 0; p < per; ++p)
    for (int c = 0; c < k; ++c) {
      for (int j = 0; j < d; ++j) x.push_back(centres[c * d + j] + g(rng));
      truth.push_back(c);
    }
  return x;
}

}  // namespace

TEST(KMeans, AssignMatchesBruteForce) {
  const int d = 17, k = 23;
  const std::int64_t n = 1500;
  for (bool spherical : {false, true}) {
    auto x = random_points(n, d, 1, spherical);
    auto c = random_points(k, d, 2, spherical);
    auto a = assign(x.data(), n, c.data(), k, d, spherical);
    ASSERT_EQ(a.cluster.size(), std::size_t(n));
    for (std::int64_t i = 0; i < n; ++i) {
      double best = std::numeric_limits<double>::infinity();
      for (int j = 0; j < k; ++j) best = std::min(best, brute_distance(&x[i * d], &c[j * d], d, spherical));
      double got = brute_distance(&x[i * d], &c[a.cluster[i] * d], d, spherical);
      ASSERT_NEAR(got, best, 1e-4) << "point " << i << (spherical ? " spherical" : " l2");
      ASSERT_NEAR(a.distance[i], got, 1e-4);
    }
  }
}

TEST(KMeans, RecoversSeparatedBlobsAndReportsItsObjective) {
  const int k = 12, d = 8;
  std::vector<std::int32_t> truth;
  auto x = blobs(k, 40, d, truth, 3);
  std::int64_t n = std::int64_t(truth.size());
  for (bool spherical : {true, false}) {
    KMeansOptions o;
    o.k = k;
    o.spherical = spherical;
    o.nredo = 3;
    auto km = train_kmeans(x.data(), n, d, o);
    ASSERT_EQ(km.centroids.size(), std::size_t(k * d));
    auto a = assign(x.data(), n, km);
    EXPECT_NEAR(nmi(truth, a.cluster), 1.0, 1e-9);
    if (spherical)
      for (int j = 0; j < k; ++j) {
        double s = 0;
        for (int t = 0; t < d; ++t) s += double(km.centroids[j * d + t]) * km.centroids[j * d + t];
        EXPECT_NEAR(s, 1.0, 1e-4);
      }
    // The objective is the sum of distances of the training points (unit rows when spherical).
    double obj = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      std::vector<float> r(&x[i * d], &x[i * d] + d);
      if (spherical) {
        double s = 0;
        for (float v : r) s += double(v) * v;
        for (float& v : r) v = float(v / std::sqrt(s));
      }
      double best = std::numeric_limits<double>::infinity();
      for (int j = 0; j < k; ++j) best = std::min(best, brute_distance(r.data(), &km.centroids[j * d], d, spherical));
      obj += best;
    }
    EXPECT_NEAR(km.objective, obj, 1e-3 * std::max(1.0, obj));
    EXPECT_EQ(km.n_train, n);
  }
}

TEST(KMeans, RedoKeepsTheBestRun) {
  const int d = 6;
  const std::int64_t n = 600;
  auto x = random_points(n, d, 5, false);
  KMeansOptions o;
  o.k = 9;
  o.iterations = 5;
  o.plus_plus_init = false;
  auto one = train_kmeans(x.data(), n, d, o);
  o.nredo = 4;
  auto best = train_kmeans(x.data(), n, d, o);  // its first run is `one` (same seed)
  EXPECT_LE(best.objective, one.objective + 1e-6);
}

TEST(KMeans, SamplingCapsTheTrainingSet) {
  const int d = 4;
  const std::int64_t n = 3000;
  auto x = random_points(n, d, 6, false);
  KMeansOptions o;
  o.k = 5;
  o.train_sample = 700;
  auto km = train_kmeans(x.data(), n, d, o);
  EXPECT_EQ(km.n_train, 700);
  EXPECT_THROW(train_kmeans(x.data(), 3, d, o), UserError);  // fewer points than clusters
}

TEST(KMeans, ThousandsOfClusters) {
  const int d = 8, k = 2000;
  const std::int64_t n = 8000;
  auto x = random_points(n, d, 7, true);
  KMeansOptions o;
  o.k = k;
  o.iterations = 4;
  auto km = train_kmeans(x.data(), n, d, o);
  EXPECT_EQ(km.k, k);
  auto a = assign(x.data(), n, km);
  for (auto c : a.cluster) ASSERT_TRUE(c >= 0 && c < k);
}

TEST(KMeans, BalancedAssignmentNeverExceedsTheCap) {
  const int d = 5, k = 7;
  const std::int64_t n = 1000;
  // Skewed: most points sit near one centroid, so the plain assignment overloads it.
  auto c = random_points(k, d, 8, false);
  auto x = random_points(n, d, 9, false);
  for (std::int64_t i = 0; i < 800; ++i)
    for (int j = 0; j < d; ++j) x[i * d + j] = c[j] + 0.1f * x[i * d + j];
  for (bool spherical : {false, true}) {
    for (std::int64_t cap : {std::int64_t(143), std::int64_t(200), std::int64_t(400)}) {
      auto a = assign_balanced(x.data(), n, c.data(), k, d, spherical, cap);
      std::vector<std::int64_t> size(k, 0);
      for (std::int64_t i = 0; i < n; ++i) {
        ASSERT_TRUE(a.cluster[i] >= 0 && a.cluster[i] < k);
        ++size[a.cluster[i]];
        ASSERT_NEAR(a.distance[i], brute_distance(&x[i * d], &c[a.cluster[i] * d], d, spherical), 1e-3);
      }
      for (int j = 0; j < k; ++j) EXPECT_LE(size[j], cap) << "cluster " << j;
    }
    // With room for everyone it is the plain assignment.
    auto plain = assign(x.data(), n, c.data(), k, d, spherical);
    auto loose = assign_balanced(x.data(), n, c.data(), k, d, spherical, n);
    EXPECT_EQ(plain.cluster, loose.cluster);
  }
  EXPECT_EQ(balanced_capacity(1000, 7, 1.0), 143);
  EXPECT_EQ(balanced_capacity(1000, 7, 1.5), 215);
  EXPECT_THROW(assign_balanced(x.data(), n, c.data(), k, d, false, 100), UserError);  // 7 x 100 < 1000
}

TEST(KMeans, SaveLoadRoundTrip) {
  moin::test::TempDir dir;
  auto x = random_points(200, 3, 10, false);
  KMeansOptions o;
  o.k = 4;
  o.spherical = false;
  auto km = train_kmeans(x.data(), 200, 3, o);
  save_kmeans(dir.path.string(), km);
  auto back = load_kmeans(dir.path.string());
  EXPECT_EQ(back.k, 4);
  EXPECT_EQ(back.d, 3);
  EXPECT_FALSE(back.spherical);
  EXPECT_EQ(back.centroids, km.centroids);
  EXPECT_DOUBLE_EQ(back.objective, km.objective);
  EXPECT_THROW(load_kmeans((dir.path / "missing").string()), UserError);
}
