#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "moin/eval/llama_scorer.h"
#include "moin/core/fs.h"
#include "moin/model/adapter_set.h"
#include "moin/route/routed_model.h"
#include "test_util.h"

namespace {

using moin::test::TempDir;

moin::LlamaConfig tiny_config() {
  moin::LlamaConfig c;
  c.vocab_size = 50;
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = true;
  return c;
}

moin::LlamaForCausalLM tiny_model() {
  moin::LlamaForCausalLM m(tiny_config());
  m->init_weights(3, 0.2);
  m->eval();
  return m;
}

// Saves `n` adapters with non-zero B (so each changes the model) under dir/<k>.
std::vector<std::string> save_adapters(const TempDir& dir, moin::LlamaForCausalLM& m, int n) {
  std::vector<std::string> dirs;
  for (int k = 0; k < n; ++k) {
    moin::LoraOptions o;
    o.r = 2;
    o.alpha = 4;
    o.seed = k + 1;
    auto a = moin::LoraAdapter::create(m->linears(), o);
    {
      torch::NoGradGuard g;
      for (const auto& mod : a.modules()) mod.B.normal_(0.0, 0.3);
    }
    dirs.push_back(dir / std::to_string(k));
    a.save(dirs.back());
  }
  return dirs;
}

// The reference: one sequence at a time, logits from the plain forward pass with one adapter on the whole
// batch (or none), log_softmax, summed.
double reference_nll(moin::LlamaForCausalLM& m, const std::vector<int>& seq, int from,
                     const moin::LoraRouting* lora = nullptr) {
  torch::NoGradGuard g;
  auto t = torch::tensor(std::vector<std::int64_t>(seq.begin(), seq.end()), torch::kLong).unsqueeze(0);
  auto logp = torch::log_softmax(m->forward(t, nullptr, lora).to(torch::kDouble), -1)[0];
  double s = 0;
  for (std::size_t i = static_cast<std::size_t>(from); i < seq.size(); ++i)
    s -= logp[static_cast<std::int64_t>(i) - 1][seq[i]].item<double>();
  return s;
}

TEST(LlamaScorer, MixedAdapterBatchMatchesOneByOneReference) {
  TempDir dir;
  auto ref = tiny_model();
  auto dirs = save_adapters(dir, ref, 2);
  moin::RoutedModel rm(tiny_model(), dirs, 2);
  moin::LlamaScorer scorer(rm);
  std::vector<std::vector<int>> seqs = {{1, 5, 7, 9, 11, 13, 2}, {1, 4}, {1, 8, 8, 8, 30, 31, 32, 33, 34, 35, 36},
                                        {1, 9, 9, 3, 3}};
  std::vector<int> from = {3, 1, 5, 2};
  // The reference model uses the same adapters from disk, one sequence and one adapter at a time.
  std::vector<moin::LoraAdapter> loaded;
  for (const auto& d : dirs) loaded.push_back(moin::LoraAdapter::load(d, ref->linears()));
  auto ref_nll = [&](std::size_t i, int a) {
    moin::AdapterSet set(ref->linears());
    if (a < 0) return reference_nll(ref, seqs[i], from[i]);
    auto all = moin::LoraRouting::all(set, set.add(loaded[static_cast<std::size_t>(a)]));
    return reference_nll(ref, seqs[i], from[i], &all);
  };
  // Every row on one adapter, then rows mixing the base and both experts in one batch.
  for (const auto& adapters : std::vector<std::vector<int>>{{-1, -1, -1, -1}, {0, 0, 0, 0}, {1, 1, 1, 1},
                                                           {0, -1, 1, 0}, {1, 0, -1, 1}}) {
    auto got = scorer.nll(seqs, from, adapters);
    auto per_token = scorer.token_logprobs(seqs, from, adapters);
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      const double want = ref_nll(i, adapters[i]);
      EXPECT_NEAR(got[i], want, 1e-4 * (1 + std::abs(want))) << "adapter " << adapters[i] << " seq " << i;
      // The per-token terms (c-BTM mixes them) are the ones nll() sums, one per scored position.
      ASSERT_EQ(per_token[i].size(), seqs[i].size() - static_cast<std::size_t>(from[i]));
      double sum = 0;
      for (float lp : per_token[i]) sum -= lp;
      EXPECT_NEAR(sum, want, 1e-4 * (1 + std::abs(want)));
    }
  }
}

TEST(RoutedModel, AdaptersChangeTheModelAndTheCacheEvictsLeastRecentlyUsed) {
  TempDir dir;
  auto m = tiny_model();
  auto dirs = save_adapters(dir, m, 3);
  moin::RoutedModel rm(tiny_model(), dirs, 2);
  moin::LlamaScorer s(rm);
  std::vector<std::vector<int>> seq = {{1, 5, 6, 7, 8, 9}};
  double base = s.nll(seq, {1}, {-1})[0];
  double e0 = s.nll(seq, {1}, {0})[0];
  EXPECT_GT(std::abs(e0 - base), 1e-4);
  s.nll(seq, {1}, {1});
  s.nll(seq, {1}, {0});  // hit
  s.nll(seq, {1}, {2});  // miss: evicts 1, the least recently used
  const auto& c = rm.cache();
  EXPECT_TRUE(c.contains(0));
  EXPECT_FALSE(c.contains(1));
  EXPECT_TRUE(c.contains(2));
  EXPECT_EQ(rm.cache_stats().misses, 3);
  EXPECT_EQ(rm.cache_stats().hits, 1);
  EXPECT_EQ(rm.cache_stats().evictions, 1);
  EXPECT_NEAR(s.nll(seq, {1}, {0})[0], e0, 1e-6);  // the same adapter gives the same figures after swaps
  EXPECT_NEAR(s.nll(seq, {1}, {-1})[0], base, 1e-6);
  EXPECT_THROW(rm.batch({3}), moin::UserError);
  // A batch may name more adapters than the cache holds.
  auto three = s.nll({seq[0], seq[0], seq[0]}, {1, 1, 1}, {0, 1, 2});
  EXPECT_NEAR(three[0], e0, 1e-5);
}

TEST(RoutedModel, ExpertFoldersAreFoundOrNamed) {
  TempDir dir;
  auto m = tiny_model();
  save_adapters(dir, m, 2);
  auto found = moin::expert_adapter_dirs(dir.path.string(), 2);
  EXPECT_EQ(found[1], dir / "1");
  // A cluster the trainer skipped, one whose job left no adapter, one never started.
  std::filesystem::create_directories(dir / "2");
  moin::fs::write_json_atomic(dir / "2/summary.json", nlohmann::json{{"status", "too_small"}});
  std::filesystem::create_directories(dir / "3/checkpoints");
  auto status = moin::find_experts(dir.path.string(), 5);
  EXPECT_TRUE(status[0].ok());
  EXPECT_EQ(status[2].status, "too_small");
  EXPECT_EQ(status[3].status, "unfinished");
  EXPECT_EQ(status[4].status, "missing");
  EXPECT_TRUE(status[4].dir.empty());
  try {
    moin::expert_adapter_dirs(dir.path.string(), 3);
    FAIL() << "expected a UserError";
  } catch (const moin::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("expert 2"), std::string::npos);
  }
}

}  // namespace
