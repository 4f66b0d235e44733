// PEER blocks (model/peer.h, `moin train --mode peer`): the product-key top-k against a brute-force top-k
// over all n^2 keys, a block's output against the formula token by token, untrained blocks leave the base
// as it was, the size that matches a parameter budget, and blocks trained, saved and reloaded give the
// outputs the run validated with.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "moin/core/error.h"
#include "moin/model/checkpoint.h"
#include "moin/model/llama.h"
#include "moin/model/peer.h"
#include "moin/train/data.h"
#include "moin/train/partition_layout.h"
#include "moin/train/trainer.h"
#include "test_util.h"
#include "train_fixtures.h"

namespace {

using moin::test::TempDir;

TEST(Peer, ProductKeyTopKEqualsBruteForceOverAllKeys) {
  torch::manual_seed(4);
  for (auto [n, k] : std::vector<std::pair<int, int>>{{13, 8}, {5, 5}, {3, 7}, {40, 16}}) {
    auto q = torch::randn({6, 3, 20});  // [tokens, heads, key_dim]
    auto keys1 = torch::randn({n, 10}), keys2 = torch::randn({n, 10});
    auto [scores, ids] = moin::PeerLayers::product_key_topk(q, keys1, keys2, k);
    ASSERT_EQ(scores.sizes(), (std::vector<std::int64_t>{6, 3, k}));
    // Every one of the n^2 sums, then the plain top-k.
    auto all = (q.narrow(-1, 0, 10).matmul(keys1.t()).unsqueeze(-1) + q.narrow(-1, 10, 10).matmul(keys2.t()).unsqueeze(-2))
                   .flatten(-2);
    auto [want_scores, want_ids] = all.topk(k, -1);
    EXPECT_LT((scores - want_scores).abs().max().item<double>(), 1e-5) << "n " << n << " k " << k;
    EXPECT_TRUE(torch::equal(ids, want_ids)) << "n " << n << " k " << k;
    // The ids name the scores they come with.
    EXPECT_LT((all.gather(-1, ids) - scores).abs().max().item<double>(), 1e-5);
  }
}

// The two ways of mixing a token's chosen experts (gathered, or all activations and scattered gates) agree,
// in value and gradient, also when two heads choose the same expert.
TEST(Peer, GatheredAndDenseMixingAgree) {
  torch::manual_seed(2);
  auto x = torch::randn({7, 12});
  auto ids = torch::randint(0, 20, {7, 6}, torch::kLong);
  ids.index_put_({0, 1}, ids.index({0, 0}));
  auto gates = torch::softmax(torch::randn({7, 6}), -1);
  std::vector<torch::Tensor> grads[2];
  torch::Tensor out[2];
  for (int dense = 0; dense < 2; ++dense) {
    torch::manual_seed(5);
    auto down_l = torch::randn({20, 12}).set_requires_grad(true), up_l = torch::randn({20, 12}).set_requires_grad(true);
    out[dense] = moin::PeerLayers::mix_experts(x, ids, gates, down_l, up_l, dense == 1);
    out[dense].pow(2).sum().backward();
    grads[dense] = {down_l.grad(), up_l.grad()};
  }
  EXPECT_LT((out[0] - out[1]).abs().max().item<double>(), 1e-5);
  for (int i = 0; i < 2; ++i) EXPECT_LT((grads[0][i] - grads[1][i]).abs().max().item<double>(), 1e-4);
}

moin::PeerOptions small_options() {
  moin::PeerOptions o;
  o.num_keys = 5;
  o.heads = 2;
  o.top_k = 3;
  o.key_dim = 8;
  o.init_std = 0.5;
  o.layers = {1};
  return o;
}

TEST(Peer, BlockIsTheFormulaTokenByToken) {
  moin::PeerLayers peer(16, 2, small_options(), 3);
  {
    torch::NoGradGuard ng;
    for (auto& [name, t] : peer.parameters())
      if (name.find(".up") != std::string::npos) t.normal_(0.0, 0.5);
  }
  EXPECT_FALSE(peer.beside_mlp(0, torch::randn({1, 2, 16})).defined());  // layer 0 has no block
  torch::NoGradGuard ng;
  torch::manual_seed(9);
  auto x = torch::randn({2, 4, 16});
  auto got = peer.beside_mlp(1, x);
  std::map<std::string, torch::Tensor> p;
  for (const auto& [name, t] : peer.parameters()) p[name.substr(name.rfind('.') + 1)] = t;
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t t = 0; t < 4; ++t) {
      auto xt = x[b][t];
      auto want = torch::zeros({16});
      for (std::int64_t h = 0; h < 2; ++h) {
        auto q = p["query"].narrow(0, h * 8, 8).matmul(xt);
        std::vector<std::pair<double, std::int64_t>> all;
        for (std::int64_t i = 0; i < 5; ++i)
          for (std::int64_t j = 0; j < 5; ++j)
            all.emplace_back(q.narrow(0, 0, 4).dot(p["keys1"][i]).item<double>() +
                                 q.narrow(0, 4, 4).dot(p["keys2"][j]).item<double>(),
                             i * 5 + j);
        std::sort(all.rbegin(), all.rend());
        double z = 0.0;
        for (int e = 0; e < 3; ++e) z += std::exp(all[static_cast<std::size_t>(e)].first);
        for (int e = 0; e < 3; ++e) {
          const auto id = all[static_cast<std::size_t>(e)].second;
          const double g = std::exp(all[static_cast<std::size_t>(e)].first) / z;
          const double a = torch::gelu(p["down"][id].dot(xt)).item<double>();
          want += g * a * p["up"][id];
        }
      }
      EXPECT_LT((got[b][t] - want).abs().max().item<double>(), 1e-5) << b << " " << t;
    }
}

TEST(Peer, UntrainedBlocksLeaveTheBaseAsItWasAndTheSizeFitsTheBudget) {
  moin::LlamaConfig c;
  c.vocab_size = 64;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  moin::LlamaForCausalLM m(c);
  m->init_weights(5, 0.3);
  m->eval();
  auto o = small_options();
  o.layers.clear();
  moin::PeerLayers peer(16, 2, o, 1);  // up vectors start at 0
  auto routing = moin::LoraRouting::layered(peer);
  auto tokens = torch::tensor({1, 5, 9, 2, 7}, torch::kLong).view({1, -1});
  torch::NoGradGuard ng;
  EXPECT_TRUE(torch::equal(m->forward(tokens, nullptr, &routing), m->forward(tokens)));

  for (std::int64_t budget : {5000, 20000, 123456}) {
    const int n = moin::PeerLayers::keys_for_params(budget, 64, 3, o);
    EXPECT_LE(3 * moin::PeerLayers::params_per_block(n, 64, o), budget);
    EXPECT_GT(3 * moin::PeerLayers::params_per_block(n + 1, 64, o), budget);
  }
  EXPECT_THROW(moin::PeerLayers::keys_for_params(100, 64, 3, o), moin::UserError);
}

TEST(Peer, TrainedSavedAndReloadedGivesTheSameOutputs) {
  TempDir dir;
  moin::LlamaConfig c;
  c.vocab_size = 128;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  auto model = moin::make_llama(c, torch::kFloat32, torch::kCPU, 7);
  moin::save_llama(model, dir / "base");
  moin::test::write_partition(dir / "p", 2, 128, 40, 10);
  moin::TrainOptions o;
  o.mode = "peer";
  o.partition = dir / "p";
  o.base = dir / "base";
  o.output = dir / "peer";
  o.peer.params = 12000;
  o.peer.heads = 2;
  o.peer.top_k = 4;
  o.peer.key_dim = 8;
  o.seq_len = 16;
  o.micro_batch = 4;
  o.max_steps = 8;
  o.lr = 1e-2;
  o.eval_every = 0;
  o.eval_tokens = 64;
  o.checkpoint_every = 0;
  o.log_every = 4;
  o.num_threads = 1;
  o.device = "cpu";
  auto summary = moin::train(o);
  ASSERT_EQ(summary["status"], "done");
  const std::int64_t params = summary["trainable_parameters"].get<std::int64_t>();
  EXPECT_LE(params, 12000);
  EXPECT_GT(params, 6000);
  auto base = moin::load_llama(dir / "base");
  base->set_requires_grad(false);
  auto peer = moin::PeerLayers::load(dir / "peer", c.hidden_size, c.num_hidden_layers);
  EXPECT_EQ(peer->num_parameters(), params);
  EXPECT_EQ(peer->options().num_keys, summary["peer"]["num_keys"].get<int>());
  auto routing = moin::LoraRouting::layered(*peer);
  for (int k = 0; k < 2; ++k) {
    moin::DocumentSet vd({moin::cluster_shard(dir / "p", k, "valid")});
    auto seqs = moin::make_validation_set(vd, o.seq_len, o.eval_tokens, 1, 2);
    const double again = moin::evaluate_loss(base, seqs, o.micro_batch, torch::kCPU, false, &routing);
    EXPECT_NEAR(again, summary["valid_loss_per_cluster"][std::to_string(k)]["final"].get<double>(), 1e-5) << k;
    EXPECT_LT(again, moin::evaluate_loss(base, seqs, o.micro_batch, torch::kCPU, false)) << k;
  }
  EXPECT_THROW(moin::PeerLayers::load(dir / "peer", 32, 2), moin::UserError);
}

}  // namespace
