#include <gtest/gtest.h>

#include <cmath>

#include "moin/eval/routing_eval.h"
#include "moin/partition/embedder.h"
#include "moin/route/router.h"

namespace {

// Embeds a text as the one-hot of its first word's first letter (a..d): 4 dims.
class FirstLetterEmbedder : public moin::Embedder {
 public:
  std::string type() const override { return "test"; }
  int dim() const override { return 4; }
  std::vector<float> embed(const std::vector<std::string>& texts) const override {
    std::vector<float> out(texts.size() * 4, 0.0f);
    for (std::size_t i = 0; i < texts.size(); ++i) {
      int c = texts[i].empty() ? 0 : (texts[i][0] - 'a') % 4;
      out[i * 4 + static_cast<std::size_t>(std::max(c, 0))] = 1.0f;
    }
    return out;
  }
  void save(const std::string&) const override {}
};

TEST(EvalRouting, LabelPurityByHand) {
  // cluster 0: x x y -> 2 majority; cluster 1: y z -> 1; cluster 2: z -> 1. (2 + 1 + 1) / 6
  EXPECT_NEAR(moin::label_purity({"x", "x", "y", "y", "z", "z"}, {0, 0, 0, 1, 1, 2}), 4.0 / 6.0, 1e-12);
  EXPECT_NEAR(moin::label_purity({"a", "b"}, {0, 1}), 1.0, 1e-12);
  EXPECT_THROW(moin::label_purity({"a"}, {0, 1}), moin::UserError);
}

TEST(EvalRouting, ReportsSizesPurityAndSpeed) {
  std::vector<float> centroids(16, 0.0f);
  for (int i = 0; i < 4; ++i) centroids[i * 4 + i] = 1.0f;
  moin::Router router(std::make_unique<FirstLetterEmbedder>(), centroids, 4, true);
  std::vector<std::string> texts = {"apple", "avocado", "banana", "cherry", "cranberry", "date", "blueberry"};
  std::vector<std::string> labels = {"fruit-a", "fruit-a", "fruit-b", "fruit-c", "fruit-c", "fruit-d", "fruit-a"};
  moin::RoutingEvalOptions opts;
  opts.prefix_tokens = {};  // no tokenizer here: the prefix curve is tested through the CLI
  opts.latency_queries = 5;
  auto r = moin::evaluate_routing(router, texts, labels, opts);
  EXPECT_EQ(r.docs, 7);
  EXPECT_EQ(r.cluster_sizes, (std::vector<std::int64_t>{2, 2, 2, 1}));
  EXPECT_NEAR(r.label_purity, 6.0 / 7.0, 1e-12);  // "blueberry" (fruit-a) sits with banana
  EXPECT_GT(r.queries_per_s, 0.0);
  EXPECT_GE(r.latency_ms_p90, r.latency_ms_p50);
  EXPECT_GE(r.latency_ms_max, r.latency_ms_p99);
  auto j = r.to_json();
  EXPECT_EQ(j["cluster_sizes"].size(), 4u);
  EXPECT_NE(r.markdown().find("label purity"), std::string::npos);
}

}  // namespace
