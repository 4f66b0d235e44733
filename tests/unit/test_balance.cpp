#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <tuple>

#include "moin/core/error.h"
#include "moin/partition/balance.h"
#include "moin/partition/kmeans.h"

namespace {

// The rule written out: every (distance, document, cluster) triple sorted, taken greedily.
std::vector<std::int32_t> brute_force(const std::vector<float>& rows, std::int64_t n, int k, std::int64_t cap) {
  std::vector<std::tuple<float, std::int64_t, int>> pairs;
  for (std::int64_t i = 0; i < n; ++i)
    for (int c = 0; c < k; ++c) pairs.emplace_back(rows[i * k + c], i, c);
  std::sort(pairs.begin(), pairs.end());
  std::vector<std::int32_t> out(n, -1);
  std::vector<std::int64_t> room(k, cap);
  for (const auto& [d, i, c] : pairs)
    if (out[i] < 0 && room[c] > 0) {
      out[i] = c;
      --room[c];
    }
  return out;
}

TEST(Balance, EqualsTheGreedyOverAllPairs) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 30; ++trial) {
    const int k = 1 + static_cast<int>(rng() % 7);
    const std::int64_t n = 1 + rng() % 300;
    std::vector<float> rows(n * k);
    // Skewed (cluster 0 is near to most points) and coarse (many equal distances: the tie-break counts).
    for (std::int64_t i = 0; i < n; ++i)
      for (int c = 0; c < k; ++c) rows[i * k + c] = static_cast<float>(rng() % 20) * 0.25f + (c == 0 ? 0.f : 2.f);
    const double factor = 1.0 + (rng() % 5) * 0.25;
    const std::int64_t cap = moin::balanced_capacity(n, k, factor);
    auto a = moin::assign_capped(n, k, cap, [&](std::int64_t i) { return rows.data() + i * k; });
    auto ref = brute_force(rows, n, k, cap);
    ASSERT_EQ(a.cluster, ref) << "trial " << trial;
    std::vector<std::int64_t> size(k, 0);
    std::int64_t moved = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      ++size[a.cluster[i]];
      EXPECT_EQ(a.distance[i], rows[i * k + a.cluster[i]]);
      const float* r = rows.data() + i * k;
      EXPECT_EQ(a.nearest[i], std::min_element(r, r + k) - r);
      moved += a.cluster[i] != a.nearest[i];
    }
    EXPECT_EQ(moved, a.moved);
    for (int c = 0; c < k; ++c) EXPECT_LE(size[c], cap);
  }
}

TEST(Balance, NoCapIsNearestAndTooSmallACapIsAnError) {
  const std::vector<float> rows = {0.1f, 0.5f, 0.2f, 0.9f, 0.7f, 0.3f, 0.4f, 0.4f, 0.4f};
  auto a = moin::assign_capped(3, 3, 3, [&](std::int64_t i) { return rows.data() + i * 3; });
  EXPECT_EQ(a.cluster, (std::vector<std::int32_t>{0, 2, 0}));  // equal distances: the lowest cluster
  EXPECT_EQ(a.moved, 0);
  a = moin::assign_capped(3, 3, 1, [&](std::int64_t i) { return rows.data() + i * 3; });
  EXPECT_EQ(a.cluster, (std::vector<std::int32_t>{0, 2, 1}));
  EXPECT_EQ(a.moved, 1);
  EXPECT_THROW(moin::assign_capped(3, 2, 1, [&](std::int64_t i) { return rows.data() + i * 3; }), moin::UserError);
}

}  // namespace
