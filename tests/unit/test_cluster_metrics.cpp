// NMI and purity against hand-computed values (scikit-learn agrees: tests/python/test_cluster_metrics_ref.py).
#include <gtest/gtest.h>

#include <cmath>

#include "moin/core/error.h"
#include "moin/core/cluster_metrics.h"

using namespace moin;

TEST(ClusterMetrics, IdenticalPartitionsScoreOne) {
  std::vector<std::int32_t> l = {0, 0, 1, 1, 2}, c = {3, 3, 0, 0, 1};  // a relabelling
  EXPECT_NEAR(nmi(l, c), 1.0, 1e-12);
  EXPECT_NEAR(purity(l, c), 1.0, 1e-12);
}

TEST(ClusterMetrics, IndependentPartitionsScoreZero) {
  std::vector<std::int32_t> l = {0, 0, 1, 1}, c = {0, 1, 0, 1};
  EXPECT_NEAR(nmi(l, c), 0.0, 1e-12);
  EXPECT_NEAR(purity(l, c), 0.5, 1e-12);
}

TEST(ClusterMetrics, HandComputedCase) {
  // Contingency rows (clusters): [2 0], [1 1], [0 2]. MI = (2/3) ln 2, H(L) = ln 2, H(C) = ln 3.
  std::vector<std::int32_t> l = {0, 0, 0, 1, 1, 1}, c = {0, 0, 1, 1, 2, 2};
  double expect = (2.0 / 3.0) * std::log(2.0) / ((std::log(2.0) + std::log(3.0)) / 2.0);
  EXPECT_NEAR(nmi(l, c), expect, 1e-12);
  EXPECT_NEAR(nmi(l, c), 0.5158037429793889, 1e-12);  // sklearn normalized_mutual_info_score
  EXPECT_NEAR(purity(l, c), 5.0 / 6.0, 1e-12);
  // NMI is symmetric; purity is not (each label's best cluster: 2 + 2 of 6).
  EXPECT_NEAR(nmi(c, l), expect, 1e-12);
  EXPECT_NEAR(purity(c, l), 4.0 / 6.0, 1e-12);
}

TEST(ClusterMetrics, TrivialPartitionsFollowScikitLearn) {
  std::vector<std::int32_t> one = {0, 0, 0}, many = {0, 1, 2};
  EXPECT_EQ(nmi(one, one), 1.0);
  EXPECT_EQ(nmi(one, many), 0.0);
  EXPECT_EQ(nmi(many, one), 0.0);
}

TEST(ClusterMetrics, ContingencyAndTopLabels) {
  std::vector<std::string> names;
  auto l = encode_labels({"b", "a", "b", "b", "c", "a"}, &names);
  EXPECT_EQ(names, (std::vector<std::string>{"b", "a", "c"}));
  EXPECT_EQ(l, (std::vector<std::int32_t>{0, 1, 0, 0, 2, 1}));
  std::vector<std::int32_t> c = {1, 1, 1, 0, 0, 1};
  auto t = contingency(l, c);
  EXPECT_EQ(t.n_clusters, 2);
  EXPECT_EQ(t.n_labels, 3);
  EXPECT_EQ(t.at(1, 0), 2);
  EXPECT_EQ(t.at(1, 1), 2);
  EXPECT_EQ(t.at(0, 2), 1);
  EXPECT_EQ(t.total(), 6);
  auto top = top_labels(t, 1);
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(top[1].size, 4);
  ASSERT_EQ(top[1].top.size(), 1u);
  EXPECT_EQ(top[1].top[0], (std::pair<std::int32_t, std::int64_t>{0, 2}));  // tie broken by label id
  auto rep = cluster_report({"x", "x", "y"}, {"7", "7", "9"});
  EXPECT_NEAR(rep["nmi"].get<double>(), 1.0, 1e-12);
  EXPECT_EQ(rep["clusters"][0]["cluster"], "7");
  EXPECT_EQ(rep["clusters"][0]["top"][0][0], "x");
}

TEST(ClusterMetrics, BadInputIsAUserError) {
  EXPECT_THROW(nmi({0, 1}, {0}), UserError);
  EXPECT_THROW(nmi({}, {}), UserError);
  EXPECT_THROW(purity({0, -1}, {0, 0}), UserError);
}
