// The learned token-level mixture of experts (model/mixture.h, `moin train --mode mixture`): the MLP with
// its routers against the formula token by token, one expert at top-1 equals that expert alone, and a
// mixture trained, saved and reloaded gives the outputs it was validated with (routers alone, and with the
// experts trained too). tests/python/test_mixture_ref.py checks the forward against transformers.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "moin/model/adapter_set.h"
#include "moin/model/checkpoint.h"
#include "moin/model/llama.h"
#include "moin/model/mixture.h"
#include "moin/train/data.h"
#include "moin/train/partition_layout.h"
#include "moin/train/trainer.h"
#include "test_util.h"
#include "train_fixtures.h"

namespace {

using moin::test::TempDir;
namespace F = torch::nn::functional;

moin::LlamaConfig tiny_config() {
  moin::LlamaConfig c;
  c.vocab_size = 64;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  return c;
}

std::shared_ptr<moin::AdapterSet> experts_for(moin::LlamaForCausalLM& m, int n) {
  auto set = std::make_shared<moin::AdapterSet>(m->linears());
  for (int i = 0; i < n; ++i) {
    moin::LoraOptions o;
    o.r = 3;
    o.alpha = 4.0 + i;
    o.seed = i + 1;
    auto a = moin::LoraAdapter::create(m->linears(), o);
    a.randomize_b(i + 21, 0.3);
    a.set_trainable(false);
    set->add(a);
  }
  return set;
}

// y = W x + sum_e g_e * scaling_e * B_e A_e x for one token.
torch::Tensor mixed(const moin::Linear& lin, const moin::AdapterSet& set, const torch::Tensor& x,
                    const std::vector<double>& g) {
  auto y = F::linear(x, lin->weight);
  for (int e = 0; e < set.size(); ++e) {
    const auto* en = set.entry(lin->lora_slot, e);
    y = y + g[static_cast<std::size_t>(e)] * en->scaling * x.matmul(en->A.t()).matmul(en->B.t());
  }
  return y;
}

// Token by token by hand: the router's logits, the top-k softmax (or the full one), each MLP projection
// with its experts weighted by them.
TEST(Mixture, EachTokenMixesItsTopKExpertsAsTheFormulaSays) {
  moin::LlamaForCausalLM m(tiny_config());
  m->init_weights(5, 0.3);
  m->eval();
  m->set_requires_grad(false);
  auto set = experts_for(m, 4);
  for (int top_k : {2, 0}) {
    moin::MixtureOptions mo;
    mo.top_k = top_k;
    mo.init_std = 0.5;
    moin::ExpertMixture mix(set, 16, 2, mo, 3);
    torch::NoGradGuard ng;
    torch::manual_seed(9);
    auto x = torch::randn({2, 5, 16});
    auto routing = mix.route(1, moin::LayerRouter::Part::Mlp, x);
    auto mlp = m->model->layers->ptr<moin::LlamaDecoderLayerImpl>(1)->mlp;
    auto got = mlp->forward(x, &routing);
    EXPECT_TRUE(mix.route(1, moin::LayerRouter::Part::Attention, x).empty());  // MLP only (BTX)
    const auto& W = mix.routers().at(1).second;
    ASSERT_EQ(mix.routers().at(1).first, "model.layers.1.mlp.router.weight");
    for (std::int64_t b = 0; b < 2; ++b)
      for (std::int64_t t = 0; t < 5; ++t) {
        auto xt = x[b][t];
        auto logits = W.matmul(xt);
        std::vector<std::pair<double, int>> by_logit;
        for (int e = 0; e < 4; ++e) by_logit.emplace_back(logits[e].item<double>(), e);
        std::sort(by_logit.rbegin(), by_logit.rend());
        const int k = top_k == 0 ? 4 : top_k;
        double z = 0.0;
        for (int j = 0; j < k; ++j) z += std::exp(by_logit[static_cast<std::size_t>(j)].first);
        std::vector<double> g(4, 0.0);
        for (int j = 0; j < k; ++j)
          g[static_cast<std::size_t>(by_logit[static_cast<std::size_t>(j)].second)] =
              std::exp(by_logit[static_cast<std::size_t>(j)].first) / z;
        auto h = F::silu(mixed(mlp->gate_proj, *set, xt, g)) * mixed(mlp->up_proj, *set, xt, g);
        auto want = mixed(mlp->down_proj, *set, h, g);
        EXPECT_LT((got[b][t] - want).abs().max().item<double>(), 1e-5) << "top_k " << top_k << " b " << b << " t " << t;
      }
  }
}

// One expert at top-1 has gate 1 on every token: the mixture is that expert alone (attention mixed too),
// and the MLP-only mixture differs from it.
TEST(Mixture, OneExpertAtTopOneIsThatExpertAlone) {
  moin::LlamaForCausalLM m(tiny_config());
  m->init_weights(6, 0.3);
  m->eval();
  m->set_requires_grad(false);
  auto set = experts_for(m, 1);
  moin::MixtureOptions mo;
  mo.top_k = 1;
  mo.attention = true;
  moin::ExpertMixture mix(set, 16, 2, mo, 1);
  auto tokens = torch::tensor({1, 5, 9, 2, 7, 33}, torch::kLong).view({1, -1});
  torch::NoGradGuard ng;
  auto layered = moin::LoraRouting::layered(mix);
  auto all = moin::LoraRouting::all(*set, 0);
  auto got = m->forward(tokens, nullptr, &layered), want = m->forward(tokens, nullptr, &all);
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-5);
  EXPECT_GT((want - m->forward(tokens)).abs().max().item<double>(), 1e-3);
  mo.attention = false;
  moin::ExpertMixture mlp_only(set, 16, 2, mo, 1);
  auto mlp_routing = moin::LoraRouting::layered(mlp_only);
  EXPECT_GT((m->forward(tokens, nullptr, &mlp_routing) - want).abs().max().item<double>(), 1e-4);
  mo.top_k = 2;
  EXPECT_THROW(moin::ExpertMixture(set, 16, 2, mo, 1), moin::UserError);
}

// The trainer's mixture mode: experts first, then routers over them (and, PESC, the experts too). The
// saved folder reloads into the outputs the run validated with: the per-cluster validation loss of the
// summary equals the reloaded mixture's, computed again here; the routers moved from their start.
TEST(Mixture, TrainedSavedAndReloadedGivesTheSameOutputs) {
  TempDir dir;
  moin::LlamaConfig c = tiny_config();
  c.vocab_size = 128;
  auto model = moin::make_llama(c, torch::kFloat32, torch::kCPU, 7);
  moin::save_llama(model, dir / "base");
  moin::test::write_partition(dir / "p", 3, 128, 40, 10);
  auto base_options = [&](const std::string& out) {
    moin::TrainOptions o;
    o.partition = dir / "p";
    o.base = dir / "base";
    o.output = dir / out;
    o.lora.r = 4;
    o.lora.alpha = 8;
    o.seq_len = 16;
    o.micro_batch = 4;
    o.max_steps = 6;
    o.lr = 1e-2;
    o.eval_every = 0;
    o.eval_tokens = 64;
    o.checkpoint_every = 0;
    o.log_every = 3;
    o.num_threads = 1;
    o.device = "cpu";
    return o;
  };
  for (int k = 0; k < 3; ++k) {
    auto o = base_options("experts/" + std::to_string(k));
    o.cluster = k;
    moin::train(o);
  }
  for (bool train_experts : {false, true}) {
    const std::string out = train_experts ? "pesc" : "btx";
    auto o = base_options(out);
    o.mode = "mixture";
    o.experts = dir / "experts";
    o.mixture.top_k = 2;
    o.mixture.attention = train_experts;
    o.mixture.train_experts = train_experts;
    o.mixture.balance_coef = 0.1;
    o.lr = 3e-2;
    auto summary = moin::train(o);
    ASSERT_EQ(summary["status"], "done");
    EXPECT_EQ(summary["mixture"]["experts"], 3);
    EXPECT_EQ(std::filesystem::exists(dir / (out + "/experts/1/adapter_model.safetensors")), train_experts);

    auto base = moin::load_llama(dir / "base");
    base->set_requires_grad(false);
    auto mix = moin::ExpertMixture::load(dir / out, base->linears(), c.hidden_size, c.num_hidden_layers);
    ASSERT_EQ(mix->size(), 3);
    EXPECT_EQ(mix->options().train_experts, train_experts);
    moin::ExpertMixture fresh(std::make_shared<moin::AdapterSet>(mix->experts()), c.hidden_size,
                              c.num_hidden_layers, o.mixture, o.seed);
    ASSERT_EQ(fresh.routers().size(), mix->routers().size());
    for (std::size_t i = 0; i < fresh.routers().size(); ++i)
      EXPECT_GT((fresh.routers()[i].second - mix->routers()[i].second).abs().max().item<double>(), 1e-4)
          << mix->routers()[i].first << " did not train";
    auto routing = moin::LoraRouting::layered(*mix);
    for (int k = 0; k < 3; ++k) {
      moin::DocumentSet vd({moin::cluster_shard(dir / "p", k, "valid")});
      auto seqs = moin::make_validation_set(vd, o.seq_len, o.eval_tokens, 1, 2);
      const double again = moin::evaluate_loss(base, seqs, o.micro_batch, torch::kCPU, false, &routing);
      const double saved = summary["valid_loss_per_cluster"][std::to_string(k)]["final"].get<double>();
      EXPECT_NEAR(again, saved, 1e-5) << out << " cluster " << k;
      const double base_loss = moin::evaluate_loss(base, seqs, o.micro_batch, torch::kCPU, false);
      EXPECT_LT(again, base_loss) << out << " cluster " << k;
    }
  }
  // A missing expert stops the run, naming it.
  std::filesystem::remove_all(dir / "experts/2");
  auto o = base_options("broken");
  o.mode = "mixture";
  o.experts = dir / "experts";
  EXPECT_NE(moin::test::user_error_of([&] { moin::train(o); }).find("expert 2"), std::string::npos);
}

}  // namespace
