// The Llama forward pass against an independent reference: llama2.c's algorithm (token by token, RoPE on
// interleaved pairs, explicit attention loops) written here in float64, on the same weights.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "moin/core/error.h"
#include "moin/model/adapter_set.h"
#include "moin/model/llama.h"
#include "test_util.h"

namespace {

using moin::LlamaConfig;
using moin::LlamaForCausalLM;

LlamaConfig tiny_config(bool tied = false) {
  LlamaConfig c;
  c.vocab_size = 61;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 128;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500.0;
  c.tie_word_embeddings = tied;
  return c;
}

LlamaForCausalLM tiny_model(bool tied = false, std::uint64_t seed = 1) {
  LlamaForCausalLM m(tiny_config(tied));
  m->init_weights(seed, 0.2);
  // Norm weights away from 1 so a mix-up between norms shows.
  torch::manual_seed(seed);
  torch::NoGradGuard g;
  for (auto& item : m->named_parameters())
    if (item.key().find("norm") != std::string::npos) item.value().copy_(1.0 + 0.3 * torch::randn(item.value().sizes()));
  m->eval();
  return m;
}

// HF rotate-halves rows of one projection -> llama2.c's interleaved rows, by explicit index mapping.
torch::Tensor to_interleaved(const torch::Tensor& w, std::int64_t n_heads) {
  const auto hd = w.size(0) / n_heads;
  std::vector<std::int64_t> src(w.size(0));
  for (std::int64_t h = 0; h < n_heads; ++h)
    for (std::int64_t i = 0; i < hd / 2; ++i) {
      src[h * hd + 2 * i] = h * hd + i;
      src[h * hd + 2 * i + 1] = h * hd + hd / 2 + i;
    }
  return w.index_select(0, torch::tensor(src));
}

// llama2.c's forward(), one token at a time, float64. Returns logits [T, V].
torch::Tensor reference_logits(LlamaForCausalLM& m, const std::vector<std::int64_t>& tokens) {
  const auto& c = m->config;
  const auto D = c.hidden_size, H = c.num_attention_heads, KV = c.num_key_value_heads, hd = D / H;
  auto d = [](const torch::Tensor& t) { return t.detach().to(torch::kFloat64); };
  auto rmsnorm = [&](const torch::Tensor& x, const torch::Tensor& w) {
    return x / std::sqrt((x * x).mean().item<double>() + c.rms_norm_eps) * d(w);
  };
  auto rope = [&](torch::Tensor v, std::int64_t pos) {
    auto a = v.accessor<double, 1>();
    for (std::int64_t i = 0; i < v.size(0); i += 2) {
      const double freq = 1.0 / std::pow(c.rope_theta, double(i % hd) / double(hd));
      const double cr = std::cos(pos * freq), ci = std::sin(pos * freq);
      const double v0 = a[i], v1 = a[i + 1];
      a[i] = v0 * cr - v1 * ci;
      a[i + 1] = v0 * ci + v1 * cr;
    }
    return v;
  };
  const auto L = c.num_hidden_layers;
  std::vector<std::vector<torch::Tensor>> kcache(L), vcache(L);
  std::vector<torch::Tensor> out;
  for (std::size_t pos = 0; pos < tokens.size(); ++pos) {
    auto x = d(m->model->embed_tokens->weight[tokens[pos]]).clone();
    for (std::int64_t l = 0; l < L; ++l) {
      auto layer = m->model->layers->ptr<moin::LlamaDecoderLayerImpl>(l);
      auto xb = rmsnorm(x, layer->input_layernorm->weight);
      auto q = rope(torch::mv(d(to_interleaved(layer->self_attn->q_proj->weight, H)), xb), pos);
      auto k = rope(torch::mv(d(to_interleaved(layer->self_attn->k_proj->weight, KV)), xb), pos);
      auto v = torch::mv(d(layer->self_attn->v_proj->weight), xb);
      kcache[l].push_back(k);
      vcache[l].push_back(v);
      auto att_out = torch::zeros({D}, torch::kFloat64);
      for (std::int64_t h = 0; h < H; ++h) {
        const auto kvh = h / (H / KV);
        auto qh = q.narrow(0, h * hd, hd);
        std::vector<double> scores;
        for (std::size_t t = 0; t <= pos; ++t)
          scores.push_back(torch::dot(qh, kcache[l][t].narrow(0, kvh * hd, hd)).item<double>() / std::sqrt(double(hd)));
        double mx = *std::max_element(scores.begin(), scores.end()), sum = 0;
        for (auto& s : scores) sum += (s = std::exp(s - mx));
        for (std::size_t t = 0; t <= pos; ++t)
          att_out.narrow(0, h * hd, hd) += scores[t] / sum * vcache[l][t].narrow(0, kvh * hd, hd);
      }
      x = x + torch::mv(d(layer->self_attn->o_proj->weight), att_out);
      xb = rmsnorm(x, layer->post_attention_layernorm->weight);
      auto g = torch::mv(d(layer->mlp->gate_proj->weight), xb);
      auto hb = g / (1 + torch::exp(-g)) * torch::mv(d(layer->mlp->up_proj->weight), xb);
      x = x + torch::mv(d(layer->mlp->down_proj->weight), hb);
    }
    x = rmsnorm(x, m->model->norm->weight);
    auto wcls = m->lm_head ? m->lm_head->weight : m->model->embed_tokens->weight;
    out.push_back(torch::mv(d(wcls), x));
  }
  return torch::stack(out);
}

torch::Tensor tokens_of(const std::vector<std::int64_t>& ids) { return torch::tensor(ids).view({1, -1}); }

TEST(Llama, ForwardMatchesLlama2cReference) {
  for (bool tied : {false, true}) {
    auto m = tiny_model(tied);
    std::vector<std::int64_t> ids = {1, 5, 17, 60, 3, 3, 42, 9, 0};
    torch::NoGradGuard g;
    auto logits = m->forward(tokens_of(ids));
    ASSERT_EQ(logits.sizes(), (std::vector<std::int64_t>{1, 9, 61}));
    auto ref = reference_logits(m, ids);
    EXPECT_LT((logits[0].to(torch::kFloat64) - ref).abs().max().item<double>(), 1e-4) << "tied=" << tied;
  }
}

TEST(Llama, BatchRowsAreIndependent) {
  auto m = tiny_model();
  torch::NoGradGuard g;
  auto a = tokens_of({1, 2, 3, 4, 5}), b = tokens_of({1, 9, 8, 7, 6});
  auto both = m->forward(torch::cat({a, b}, 0));
  EXPECT_TRUE(torch::allclose(both[0], m->forward(a)[0], 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(both[1], m->forward(b)[0], 1e-5, 1e-5));
}

TEST(Llama, KVCacheMatchesFullRecompute) {
  auto m = tiny_model();
  torch::NoGradGuard g;
  auto ids = torch::randint(0, 61, {2, 20});
  auto full = m->forward(ids);
  moin::KVCache cache;
  // A prefill of 7, a chunk of 5 (queries after a cache: the bottom-right causal mask), then single tokens.
  std::vector<torch::Tensor> parts = {m->forward(ids.narrow(1, 0, 7), &cache)};
  EXPECT_EQ(cache.length(), 7);
  parts.push_back(m->forward(ids.narrow(1, 7, 5), &cache));
  for (int t = 12; t < 20; ++t) parts.push_back(m->forward(ids.narrow(1, t, 1), &cache));
  EXPECT_EQ(cache.length(), 20);
  auto inc = torch::cat(parts, 1);
  EXPECT_LT((inc - full).abs().max().item<double>(), 1e-5);
}

TEST(Llama, HiddenStatesFollowHuggingFaceIndexing) {
  auto m = tiny_model();
  torch::NoGradGuard g;
  auto ids = tokens_of({1, 4, 9, 16});
  EXPECT_TRUE(torch::equal(m->hidden_states(ids, 0), m->model->embed_tokens(ids)));
  auto last = m->hidden_states(ids, -1);
  EXPECT_TRUE(torch::allclose(last, m->final_hidden(ids), 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(m->head(last), m->forward(ids), 1e-6, 1e-6));
  EXPECT_TRUE(torch::equal(m->hidden_states(ids, 2), m->hidden_states(ids, -1)));
  // Layer 1 output: the embeddings through decoder layer 0.
  auto [cos, sin] = moin::rope_cos_sin(8, 500.0, 0, 4, torch::kCPU);
  auto h1 = m->model->layers->ptr<moin::LlamaDecoderLayerImpl>(0)->forward(m->model->embed_tokens(ids), cos, sin);
  EXPECT_TRUE(torch::allclose(m->hidden_states(ids, 1), h1, 1e-6, 1e-6));
  EXPECT_THROW(m->hidden_states(ids, 3), moin::UserError);
  EXPECT_THROW(m->hidden_states(ids, -4), moin::UserError);
}

TEST(Llama, LinearsAreTheRegisteredProjectionsByHuggingFaceName) {
  auto m = tiny_model();
  auto lin = m->linears();
  ASSERT_EQ(lin.size(), 2u * 7u);
  EXPECT_EQ(lin[0].first, "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(lin[6].first, "model.layers.0.mlp.down_proj");
  EXPECT_EQ(lin[13].first, "model.layers.1.mlp.down_proj");
  auto params = m->named_parameters();
  for (auto& [name, l] : lin) {
    auto* p = params.find(name + ".weight");
    ASSERT_NE(p, nullptr) << name;
    EXPECT_TRUE(p->is_same(l->weight)) << name;
  }
  // Parameter names are the checkpoint names.
  std::vector<std::string> names;
  for (auto& [n, t] : m->state_tensors()) names.push_back(n);
  EXPECT_EQ(names.front(), "model.embed_tokens.weight");
  EXPECT_NE(std::find(names.begin(), names.end(), "model.layers.1.post_attention_layernorm.weight"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "model.norm.weight"), names.end());
  EXPECT_EQ(names.back(), "lm_head.weight");
  EXPECT_EQ(static_cast<std::int64_t>(names.size()), 2 + 9 * 2 + 1);
  std::int64_t count = 0;
  for (auto& [n, t] : m->state_tensors()) count += t.numel();
  EXPECT_EQ(count, m->config.num_parameters());
}

TEST(Llama, AdaptersNamedByACallChangeOnlyThatCall) {
  auto m = tiny_model();
  torch::NoGradGuard g;
  auto ids = tokens_of({1, 2, 3});
  auto base = m->forward(ids);
  moin::LoraOptions o;
  o.r = 2;
  o.target_modules = {"q_proj"};
  auto a = moin::LoraAdapter::create(m->linears(), o);
  a.randomize_b(3, 1.0);
  moin::AdapterSet set(m->linears());
  auto all = moin::LoraRouting::all(set, set.add(a));
  EXPECT_GT((m->forward(ids, nullptr, &all) - base).abs().max().item<double>(), 1e-3);
  EXPECT_TRUE(torch::equal(m->forward(ids), base));  // the model holds no adapter state
}

TEST(Llama, FreezingAndGradients) {
  auto m = tiny_model();
  m->set_requires_grad(false);
  for (auto& p : m->parameters()) EXPECT_FALSE(p.requires_grad());
  m->set_requires_grad(true);
  auto ids = torch::randint(0, 61, {2, 6});
  auto logits = m->forward(ids);
  auto loss = moin::cross_entropy(logits.narrow(1, 0, 5), ids.narrow(1, 1, 5));
  loss.backward();
  for (auto& item : m->named_parameters()) EXPECT_TRUE(item.value().grad().defined()) << item.key();
}

TEST(Llama, CrossEntropyMatchesLogSoftmaxAndIgnoresPadding) {
  auto logits = torch::randn({2, 3, 7});
  auto targets = torch::tensor({{1, 6, -100}, {0, -100, 3}});
  auto lp = torch::log_softmax(logits.to(torch::kFloat64), -1);
  double expected = -(lp[0][0][1] + lp[0][1][6] + lp[1][0][0] + lp[1][2][3]).item<double>() / 4;
  EXPECT_NEAR(moin::cross_entropy(logits, targets).item<double>(), expected, 1e-5);
  EXPECT_NEAR(moin::cross_entropy(logits.to(torch::kBFloat16), targets).item<double>(), expected, 0.1);
}

TEST(Llama, HalfPrecisionForwardIsClose) {
  auto m = tiny_model();
  torch::NoGradGuard g;
  auto ids = tokens_of({1, 5, 7, 11, 13});
  auto ref = m->forward(ids);
  for (auto dt : {torch::kBFloat16, torch::kFloat16}) {
    auto h = tiny_model();
    h->to(dt);
    auto out = h->forward(ids);
    EXPECT_EQ(out.scalar_type(), dt);
    auto err = (out.to(torch::kFloat32) - ref).abs().max().item<double>();
    EXPECT_LT(err, 0.15 * ref.abs().max().item<double>()) << c10::toString(dt);
  }
}

TEST(LlamaConfig, JsonRoundTripAndHuggingFaceSpellings) {
  auto c = tiny_config();
  auto j = c.to_json();
  EXPECT_EQ(j["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(j["rope_parameters"]["rope_theta"], 500.0);
  EXPECT_EQ(j["head_dim"], 8);
  auto back = LlamaConfig::from_json(j, "x");
  EXPECT_EQ(back.to_json(), j);
  // transformers 5.x spelling only
  nlohmann::json j5 = {{"model_type", "llama"}, {"hidden_size", 32}, {"intermediate_size", 40},
                       {"num_hidden_layers", 1}, {"num_attention_heads", 4}, {"vocab_size", 10},
                       {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 1234.0}}},
                       {"dtype", "bfloat16"}, {"eos_token_id", {2, 7}}};
  auto c5 = LlamaConfig::from_json(j5, "x");
  EXPECT_EQ(c5.rope_theta, 1234.0);
  EXPECT_EQ(c5.num_key_value_heads, 4);
  EXPECT_EQ(c5.torch_dtype, "bfloat16");
  EXPECT_EQ(c5.eos_token_id, 2);
  EXPECT_FALSE(c5.tie_word_embeddings);  // LlamaConfig's default when absent
  EXPECT_EQ(c5.rms_norm_eps, 1e-6);
}

TEST(LlamaConfig, RejectsWhatItCannotRunNamingTheSource) {
  auto expect_error = [](nlohmann::json j, const std::string& needle) {
    try {
      LlamaConfig::from_json(j, "dir/config.json");
      ADD_FAILURE() << "accepted " << j.dump();
    } catch (const moin::UserError& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("dir/config.json"), std::string::npos) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    }
  };
  auto base = tiny_config().to_json();
  auto j = base;
  j["num_key_value_heads"] = 3;
  expect_error(j, "num_key_value_heads");
  j = base;
  j["model_type"] = "gemma";
  expect_error(j, "model_type");
  j = base;
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}};
  expect_error(j, "yarn");
  j = base;
  j["hidden_size"] = "big";
  expect_error(j, "hidden_size");
  j = base;
  j["hidden_act"] = "gelu";
  expect_error(j, "hidden_act");
  j = base;
  j["vocab_size"] = 0;
  expect_error(j, "vocab_size");
}

TEST(Llama, RopeRotatesHalvesLikeInterleavedPairsAfterPermutation) {
  // rotate_half on the HF layout == rotating (2i, 2i+1) on the interleaved layout.
  const std::int64_t hd = 8, T = 5;
  auto x = torch::randn({1, 1, T, hd}, torch::kFloat64);
  auto [cos, sin] = moin::rope_cos_sin(hd, 10000.0, 3, T, torch::kCPU);
  auto y = moin::apply_rope(x, cos.to(torch::kFloat64), sin.to(torch::kFloat64));
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t i = 0; i < hd / 2; ++i) {
      const double ang = (t + 3) / std::pow(10000.0, 2.0 * i / hd);
      const double a = x[0][0][t][i].item<double>(), b = x[0][0][t][i + hd / 2].item<double>();
      EXPECT_NEAR(y[0][0][t][i].item<double>(), a * std::cos(ang) - b * std::sin(ang), 1e-5);
      EXPECT_NEAR(y[0][0][t][i + hd / 2].item<double>(), b * std::cos(ang) + a * std::sin(ang), 1e-5);
    }
}

TEST(Llama, ParsesDtypesAndDevices) {
  EXPECT_EQ(moin::parse_dtype("bf16"), torch::kBFloat16);
  EXPECT_EQ(moin::parse_dtype("float16"), torch::kFloat16);
  EXPECT_THROW(moin::parse_dtype("int8"), moin::UserError);
  EXPECT_TRUE(moin::parse_device("cpu").is_cpu());
  EXPECT_THROW(moin::parse_device("tpu"), moin::UserError);
  EXPECT_EQ(moin::dtype_name(torch::kBFloat16), "bfloat16");
}

}  // namespace
