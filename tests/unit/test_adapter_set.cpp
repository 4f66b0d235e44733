// Mixed-adapter batches: a batch whose rows use different LoRA adapters (and per-token weighted mixtures)
// equals running each row alone, against independent references: one row at a time with one adapter on
// the whole batch, a model with the mixture merged into its weights, and the LoRA formula by hand.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moin/core/error.h"
#include "moin/model/adapter_set.h"
#include "moin/model/arrow.h"
#include "moin/model/llama.h"

namespace {

moin::LlamaConfig tiny_config() {
  moin::LlamaConfig c;
  c.vocab_size = 40;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  c.model_type = "qwen2";  // q/k/v biases too: LoRA must leave them alone
  return c;
}

moin::LlamaForCausalLM tiny_model() {
  moin::LlamaForCausalLM m(tiny_config());
  m->init_weights(5, 0.3);
  m->eval();
  m->set_requires_grad(false);
  return m;
}

// Adapters that differ in rank, scaling and targets (rows grouped by adapter), or only in scaling and
// values (the batched path: stacked A and B, two bmm's); B random so each changes the model.
std::vector<moin::LoraAdapter> make_adapters(moin::LlamaForCausalLM& m, bool same_shape = false) {
  std::vector<moin::LoraAdapter> out;
  const auto all = moin::llama_projection_names();
  const std::vector<std::pair<int, std::vector<std::string>>> kinds =
      same_shape ? std::vector<std::pair<int, std::vector<std::string>>>{{3, all}, {3, all}, {3, all}}
                 : std::vector<std::pair<int, std::vector<std::string>>>{
                       {4, all}, {2, {"q_proj", "v_proj", "down_proj"}}, {3, all}};
  for (std::size_t i = 0; i < kinds.size(); ++i) {
    moin::LoraOptions o;
    o.r = kinds[i].first;
    o.alpha = 2.0 + static_cast<double>(i);
    o.target_modules = kinds[i].second;
    o.seed = static_cast<std::int64_t>(i) + 1;
    auto a = moin::LoraAdapter::create(m->linears(), o);
    a.randomize_b(static_cast<std::int64_t>(i) + 11, 0.3);
    a.set_trainable(false);
    out.push_back(a);
  }
  return out;
}

// One row with one adapter on the whole batch. Grad mode stays on (nothing requires grad), so this is the
// plain two-matmul LoRA, not the weights merged per call that inference without autograd uses.
torch::Tensor logits_alone(moin::LlamaForCausalLM& m, const torch::Tensor& row, const moin::LoraAdapter* a) {
  if (!a) return m->forward(row);
  moin::AdapterSet set(m->linears());
  auto all = moin::LoraRouting::all(set, set.add(*a));
  return m->forward(row, nullptr, &all);
}

// Each row of `out` (a batch routed by per_row, -1: base) against that row run alone with its adapter.
void expect_each_row_alone(moin::LlamaForCausalLM& m, const std::vector<moin::LoraAdapter>& adapters,
                           const torch::Tensor& tokens, const std::vector<int>& per_row, const torch::Tensor& out,
                           const char* what) {
  for (std::int64_t b = 0; b < tokens.size(0); ++b) {
    const int a = per_row[static_cast<std::size_t>(b)];
    auto want = logits_alone(m, tokens.narrow(0, b, 1), a < 0 ? nullptr : &adapters[static_cast<std::size_t>(a)]);
    EXPECT_LT((out.narrow(0, b, 1) - want).abs().max().item<double>(), 1e-5) << what << ", row " << b << " adapter " << a;
  }
}

class AdapterSetPaths : public ::testing::TestWithParam<bool> {};

TEST_P(AdapterSetPaths, MixedAdapterBatchEqualsEachRowAlone) {
  auto m = tiny_model();
  auto adapters = make_adapters(m, GetParam());
  moin::AdapterSet set(m->linears());
  for (const auto& a : adapters) set.add(a);
  torch::manual_seed(3);
  auto tokens = torch::randint(0, 40, {6, 9}, torch::kLong);
  // Any rows, and equal contiguous blocks of rows (a packed training step's batch: no gathers).
  for (const std::vector<int>& per_row : {std::vector<int>{0, -1, 2, 1, 0, 2}, std::vector<int>{1, 1, 0, 0, 2, 2}}) {
    auto routing = moin::LoraRouting::rows(set, per_row, m->device());
    EXPECT_EQ(routing.block_adapters.empty(), per_row[0] == 0);
    // With autograd on: thin LoRA matmuls per row group (or batched); without: each group's adapter folded
    // into a copy of the weights for the call.
    torch::Tensor mixed = m->forward(tokens, nullptr, &routing), merged;
    {
      torch::NoGradGuard g;
      merged = m->forward(tokens, nullptr, &routing);
    }
    expect_each_row_alone(m, adapters, tokens, per_row, mixed, "autograd");
    expect_each_row_alone(m, adapters, tokens, per_row, merged, "merged");
  }
  // One adapter on every row, merged, against the same references.
  {
    torch::NoGradGuard g;
    auto all = moin::LoraRouting::all(set, 2);
    auto out = m->forward(tokens, nullptr, &all);
    for (std::int64_t b = 0; b < 6; ++b)
      EXPECT_LT((out.narrow(0, b, 1) - logits_alone(m, tokens.narrow(0, b, 1), &adapters[2])).abs().max().item<double>(),
                1e-5);
  }
  // The adapters do change the model (the comparison above is not between equal things).
  EXPECT_GT((logits_alone(m, tokens.narrow(0, 0, 1), &adapters[0]) - logits_alone(m, tokens.narrow(0, 0, 1), nullptr))
                .abs()
                .max()
                .item<double>(),
            1e-2);
}

// Without autograd, a projection folds a row group's adapter into its weights only when the group has rows
// enough (2 * rows * T * (in + out) >= in * out); the other groups' rows take the base weight plus their two
// thin matmuls, in the same call. At T = 2 in this model a group of 3 rows folds everywhere and a group of 1
// nowhere; a group of 2 folds in q/k/v/o and stays thin in the MLP.
TEST_P(AdapterSetPaths, WithoutAutogradBigGroupsFoldAndSmallOnesStayThin) {
  auto m = tiny_model();
  auto adapters = make_adapters(m, GetParam());
  moin::AdapterSet set(m->linears());
  for (const auto& a : adapters) set.add(a);
  torch::manual_seed(5);
  auto tokens = torch::randint(0, 40, {6, 2}, torch::kLong);
  for (const std::vector<int>& per_row : {std::vector<int>{0, 0, 0, 1, -1, 2}, std::vector<int>{0, 1, 2, -1, 0, 1},
                                          std::vector<int>{2, 2, 2, 2, 1, 0}}) {
    auto routing = moin::LoraRouting::rows(set, per_row, m->device());
    torch::Tensor out;
    {
      torch::NoGradGuard g;
      out = m->forward(tokens, nullptr, &routing);
    }
    expect_each_row_alone(m, adapters, tokens, per_row, out, "no autograd");
  }
}

TEST_P(AdapterSetPaths, MixedBatchWithACacheDecodesLikeEachRowAlone) {
  auto m = tiny_model();
  auto adapters = make_adapters(m, GetParam());
  moin::AdapterSet set(m->linears());
  for (const auto& a : adapters) set.add(a);
  torch::manual_seed(4);
  auto tokens = torch::randint(0, 40, {3, 8}, torch::kLong);
  auto routing = moin::LoraRouting::rows(set, {2, 0, 1}, m->device());
  torch::NoGradGuard g;
  moin::KVCache cache;
  m->forward(tokens.narrow(1, 0, 7), &cache, &routing);
  auto step = m->forward(tokens.narrow(1, 7, 1), &cache, &routing);  // one token per row, T = 1
  const int per_row[] = {2, 0, 1};
  for (std::int64_t b = 0; b < 3; ++b) {
    auto want = logits_alone(m, tokens.narrow(0, b, 1), &adapters[static_cast<std::size_t>(per_row[b])]);
    EXPECT_LT((step.narrow(0, b, 1) - want.narrow(1, 7, 1)).abs().max().item<double>(), 1e-5) << b;
  }
}

// Per-row constant weights: each row equals a base model with its weighted adapters merged into W.
TEST(AdapterSet, WeightedMixtureEqualsTheMixtureMergedIntoTheWeights) {
  auto m = tiny_model();
  auto adapters = make_adapters(m);
  moin::AdapterSet set(m->linears());
  for (const auto& a : adapters) set.add(a);
  const std::int64_t B = 3, T = 7, k = 2;
  torch::manual_seed(5);
  auto tokens = torch::randint(0, 40, {B, T}, torch::kLong);
  // Row 0: 0.7 x adapter 0 + 0.3 x adapter 2; row 1: 0.5 x 1 + 0.5 x 1 (one adapter twice); row 2: 0.4 x 2
  // and nothing in the second slot (-1).
  const std::vector<std::vector<std::pair<int, double>>> mix = {{{0, 0.7}, {2, 0.3}}, {{1, 0.5}, {1, 0.5}}, {{2, 0.4}, {-1, 0.9}}};
  auto ids = torch::empty({B, T, k}, torch::kLong);
  auto w = torch::empty({B, T, k}, torch::kFloat32);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t j = 0; j < k; ++j) {
      ids.select(0, b).select(1, j).fill_(mix[b][j].first);
      w.select(0, b).select(1, j).fill_(mix[b][j].second);
    }
  torch::Tensor got;
  {
    torch::NoGradGuard g;
    auto routing = moin::LoraRouting::mixture(set, ids, w);
    got = m->forward(tokens, nullptr, &routing);
  }
  for (std::int64_t b = 0; b < B; ++b) {
    auto ref = tiny_model();
    auto ref_linears = ref->linears();
    {
      torch::NoGradGuard g;
      const auto lin = m->linears();
      for (std::size_t p = 0; p < lin.size(); ++p) {
        auto& W = ref_linears[p].second->weight;
        for (const auto& [a, weight] : mix[static_cast<std::size_t>(b)]) {
          if (a < 0) continue;
          const auto* e = set.entry(lin[p].second->lora_slot, a);
          if (e) W.add_(weight * e->scaling * e->B.matmul(e->A));
        }
      }
    }
    auto want = logits_alone(ref, tokens.narrow(0, b, 1), nullptr);
    EXPECT_LT((got.narrow(0, b, 1) - want).abs().max().item<double>(), 1e-5) << "row " << b;
  }
}

// Per-token weights at one projection, by the formula: y = x W^T + b + sum_j w_j s_j x A_j^T B_j^T.
TEST(AdapterSet, PerTokenMixtureAtAProjectionFollowsTheFormula) {
  auto m = tiny_model();
  auto adapters = make_adapters(m);
  moin::AdapterSet set(m->linears());
  for (const auto& a : adapters) set.add(a);
  auto q = m->model->layers->ptr<moin::LlamaDecoderLayerImpl>(1)->self_attn->q_proj;
  const std::int64_t B = 2, T = 5, k = 2;
  torch::manual_seed(6);
  auto x = torch::randn({B, T, q->in_features});
  auto ids = torch::randint(-1, 3, {B, T, k}, torch::kLong);
  auto w = torch::rand({B, T, k}).requires_grad_(true);  // a learned router's weights
  auto routing = moin::LoraRouting::mixture(set, ids, w);
  auto got = q->forward(x, &routing);
  torch::NoGradGuard g;
  auto want = torch::nn::functional::linear(x, q->weight, q->bias);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t j = 0; j < k; ++j) {
        const auto a = ids[b][t][j].item<std::int64_t>();
        if (a < 0) continue;
        const auto* e = set.entry(q->lora_slot, static_cast<int>(a));
        if (!e) continue;
        want[b][t] += w[b][t][j].item<double>() * e->scaling * x[b][t].matmul(e->A.t()).matmul(e->B.t());
      }
  EXPECT_LT((got.detach() - want).abs().max().item<double>(), 1e-5);
  EXPECT_TRUE(got.requires_grad());  // differentiable in the weights
}

// Arrow's prototype is ΔW = B A's top right singular vector: against an SVD of the full ΔW.
TEST(Arrow, PrototypeIsTheTopRightSingularVectorOfTheFullDelta) {
  torch::manual_seed(3);
  for (int trial = 0; trial < 4; ++trial) {
    auto A = torch::randn({4, 24}), B = torch::randn({40, 4});
    auto v = moin::ArrowLibrary::top_right_singular_vector(A, B);
    auto ref = std::get<2>(torch::linalg_svd(B.mm(A), false))[0];
    EXPECT_NEAR(v.norm().item<double>(), 1.0, 1e-5);
    EXPECT_NEAR(std::abs(v.dot(ref).item<double>()), 1.0, 1e-5);  // the same up to sign
  }
}

// Each token takes its top-k adapters by |<x, p_e>| and softmax(|<x, p_e>| / T) weights, token by token by
// hand with prototypes from a full SVD; adapters of another rank in one projection are refused.
TEST(Arrow, EachTokenMixesItsTopKAdaptersAsTheFormulaSays) {
  auto m = tiny_model();
  auto adapters = make_adapters(m, /*same_shape=*/true);
  moin::AdapterSet set(m->linears());
  for (const auto& a : adapters) set.add(a);
  const double T = 0.7;
  moin::ArrowLibrary library(set, moin::ArrowOptions{2, T});
  auto routing = moin::LoraRouting::arrow_mix(library);
  auto q = m->model->layers->ptr<moin::LlamaDecoderLayerImpl>(1)->self_attn->q_proj;
  torch::manual_seed(8);
  auto x = torch::randn({2, 5, q->in_features});
  torch::NoGradGuard g;
  auto got = q->forward(x, &routing);
  auto want = torch::nn::functional::linear(x, q->weight, q->bias);
  std::vector<torch::Tensor> protos;
  for (int e = 0; e < set.size(); ++e) {
    const auto* en = set.entry(q->lora_slot, e);
    protos.push_back(std::get<2>(torch::linalg_svd(en->B.mm(en->A), false))[0]);
  }
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t t = 0; t < 5; ++t) {
      auto xt = x[b][t];
      std::vector<std::pair<double, int>> sims;
      for (int e = 0; e < set.size(); ++e) sims.emplace_back(std::abs(xt.dot(protos[static_cast<std::size_t>(e)]).item<double>()), e);
      std::sort(sims.rbegin(), sims.rend());
      const double z = std::exp(sims[0].first / T) + std::exp(sims[1].first / T);
      for (int j = 0; j < 2; ++j) {
        const auto* en = set.entry(q->lora_slot, sims[static_cast<std::size_t>(j)].second);
        want[b][t] += std::exp(sims[static_cast<std::size_t>(j)].first / T) / z * en->scaling *
                      xt.matmul(en->A.t()).matmul(en->B.t());
      }
    }
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-5);
  EXPECT_GT((got - torch::nn::functional::linear(x, q->weight, q->bias)).abs().max().item<double>(), 1e-3);
  // The whole model runs under it, and differs from every adapter alone.
  auto tokens = torch::tensor({1, 5, 9, 2, 7}, torch::kLong).view({1, -1});
  auto arrow_logits = m->forward(tokens, nullptr, &routing);
  for (const auto& a : adapters) EXPECT_GT((arrow_logits - logits_alone(m, tokens, &a)).abs().max().item<double>(), 1e-4);

  moin::AdapterSet mixed_ranks(m->linears());
  for (const auto& a : make_adapters(m, false)) mixed_ranks.add(a);
  EXPECT_THROW(moin::ArrowLibrary(mixed_ranks, moin::ArrowOptions{}), moin::UserError);
}

// One backward through a mixed batch gives each adapter the gradient of its own rows' loss alone.
TEST_P(AdapterSetPaths, MixedBatchGradientsEqualEachAdapterAlone) {
  auto m = tiny_model();
  auto adapters = make_adapters(m, GetParam());
  for (auto& a : adapters) a.set_trainable(true);
  torch::manual_seed(7);
  auto tokens = torch::randint(0, 40, {4, 6}, torch::kLong);
  auto loss_of = [&](const torch::Tensor& logits, const torch::Tensor& t) {
    return moin::cross_entropy(logits.narrow(1, 0, 5), t.narrow(1, 1, 5));
  };
  // Interleaved rows, and contiguous blocks (a packed training step).
  for (const std::vector<int>& per_row : {std::vector<int>{0, 2, 0, 2}, std::vector<int>{2, 2, 0, 0}}) {
    auto rows_of = [&](int a) {
      std::vector<std::int64_t> idx;
      for (std::size_t b = 0; b < per_row.size(); ++b)
        if (per_row[b] == a) idx.push_back(static_cast<std::int64_t>(b));
      return torch::tensor(idx, torch::kLong);
    };
    std::vector<std::vector<torch::Tensor>> alone;
    for (int a : {0, 2}) {
      auto& ad = adapters[static_cast<std::size_t>(a)];
      for (auto& p : ad.parameters()) p.mutable_grad() = torch::Tensor();
      moin::AdapterSet set(m->linears());
      auto all = moin::LoraRouting::all(set, set.add(ad));
      auto t = tokens.index_select(0, rows_of(a));
      loss_of(m->forward(t, nullptr, &all), t).backward();
      std::vector<torch::Tensor> g;
      for (auto& p : ad.parameters()) g.push_back(p.grad().clone());
      alone.push_back(g);
    }
    for (auto& a : adapters)
      for (auto& p : a.parameters()) p.mutable_grad() = torch::Tensor();
    moin::AdapterSet set(m->linears());
    for (const auto& a : adapters) set.add(a);
    auto routing = moin::LoraRouting::rows(set, per_row, m->device());
    auto logits = m->forward(tokens, nullptr, &routing);
    auto rows0 = rows_of(0), rows2 = rows_of(2);
    (loss_of(logits.index_select(0, rows0), tokens.index_select(0, rows0)) +
     loss_of(logits.index_select(0, rows2), tokens.index_select(0, rows2)))
        .backward();
    int which = 0;
    for (int a : {0, 2}) {
      auto params = adapters[static_cast<std::size_t>(a)].parameters();
      for (std::size_t i = 0; i < params.size(); ++i)
        EXPECT_LT((params[i].grad() - alone[static_cast<std::size_t>(which)][i]).abs().max().item<double>(), 1e-5)
            << "adapter " << a << " tensor " << i << " rows " << per_row[0] << per_row[1];
      ++which;
    }
    for (auto& p : adapters[1].parameters()) EXPECT_FALSE(p.grad().defined());  // named by no row
  }
}

// false: adapters of different ranks and targets (grouped rows); true: equal shapes (batched bmm's).
INSTANTIATE_TEST_SUITE_P(GroupedAndBatched, AdapterSetPaths, ::testing::Bool());

TEST(AdapterSet, RefusesWhatDoesNotFit) {
  auto m = tiny_model();
  auto adapters = make_adapters(m);
  moin::AdapterSet set(m->linears());
  set.add(adapters[0]);
  EXPECT_THROW(moin::LoraRouting::rows(set, {0, 1}, m->device()), moin::UserError);  // no adapter 1
  EXPECT_THROW(moin::LoraRouting::all(set, -1), moin::UserError);
  auto other = adapters[1];
  other.to(torch::kCPU, torch::kFloat64);
  EXPECT_THROW(set.add(other), moin::UserError);  // dtype differs from the model's
  EXPECT_EQ(set.size(), 1);                       // a refused adapter leaves the set as it was
}

}  // namespace
