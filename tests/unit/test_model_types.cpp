// The Llama family's variants as config fields: model_type llama, mistral, qwen2, qwen3 read from (and
// written as) Hugging Face config.json, refusals naming the key, q/k/v biases, Qwen3's q/k RMSNorm,
// Mistral's sliding window, RoPE scaling, and sharded checkpoints. Numerics against transformers:
// tests/python/test_model_types_ref.py.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "moin/model/checkpoint.h"
#include "moin/model/adapter_set.h"
#include "moin/model/safetensors_torch.h"
#include "test_util.h"

namespace {

using json = nlohmann::json;
using moin::LlamaConfig;
using moin::LlamaForCausalLM;
using moin::test::TempDir;
using moin::test::user_error_of;

json hf_config(const std::string& type) {
  return {{"model_type", type}, {"hidden_size", 32}, {"intermediate_size", 40}, {"num_hidden_layers", 2},
          {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"vocab_size", 50}};
}

LlamaConfig tiny(const std::string& type) {
  auto c = LlamaConfig::from_json(hf_config(type), "x");
  c.max_position_embeddings = 64;
  c.rope_theta = 500.0;
  return c;
}

// A model whose every parameter, biases included, is random: a bias mix-up shows in the output.
LlamaForCausalLM random_model(const LlamaConfig& c, std::uint64_t seed = 3) {
  auto m = moin::make_llama(c, torch::kFloat32, torch::kCPU, seed, 0.2);
  torch::manual_seed(static_cast<std::int64_t>(seed));
  torch::NoGradGuard g;
  for (auto& item : m->named_parameters())
    if (item.key().find("bias") != std::string::npos || item.key().find("norm") != std::string::npos)
      item.value().add_(0.3 * torch::randn(item.value().sizes()));
  m->eval();
  return m;
}

std::string refusal(const json& j) {
  return user_error_of([&] { LlamaConfig::from_json(j, "dir/config.json"); });
}

TEST(LlamaConfigTypes, EachTypeGetsItsTransformersDefaults) {
  auto llama = LlamaConfig::from_json(hf_config("llama"), "x");
  EXPECT_FALSE(llama.tie_word_embeddings);  // LlamaConfig's default (not PretrainedConfig's)
  EXPECT_FALSE(llama.qkv_bias());
  EXPECT_EQ(llama.bos_token_id, 1);

  auto qwen2 = LlamaConfig::from_json(hf_config("qwen2"), "x");
  EXPECT_TRUE(qwen2.qkv_bias());
  EXPECT_FALSE(qwen2.o_bias());
  EXPECT_EQ(qwen2.bos_token_id, -1);
  EXPECT_EQ(qwen2.max_position_embeddings, 32768);

  auto mistral = LlamaConfig::from_json(hf_config("mistral"), "x");
  EXPECT_EQ(mistral.sliding_window, 4096);  // MistralConfig's default when the key is absent
  auto j = hf_config("mistral");
  j["sliding_window"] = nullptr;
  EXPECT_EQ(LlamaConfig::from_json(j, "x").sliding_window, 0);
  j["sliding_window"] = 7;
  EXPECT_EQ(LlamaConfig::from_json(j, "x").sliding_window, 7);

  auto qwen3 = LlamaConfig::from_json(hf_config("qwen3"), "x");
  EXPECT_EQ(qwen3.dim_head(), 128);  // Qwen3Config's head_dim default, not hidden / heads
  EXPECT_TRUE(qwen3.qk_norm());

  // What transformers 5.23 writes for Qwen2 (layer_types, use_sliding_window false, sliding_window null).
  j = hf_config("qwen2");
  j["layer_types"] = {"full_attention", "full_attention"};
  j["use_sliding_window"] = false;
  j["sliding_window"] = nullptr;
  j["max_window_layers"] = 28;
  j["architectures"] = {"Qwen2ForCausalLM"};
  EXPECT_NO_THROW(LlamaConfig::from_json(j, "x"));
}

TEST(LlamaConfigTypes, JsonRoundTripForEveryType) {
  for (const std::string type : {"llama", "mistral", "qwen2", "qwen3"}) {
    auto c = tiny(type);
    if (type == "mistral") c.sliding_window = 5;
    if (type == "llama") {
      c.attention_bias = true;
      c.rope_scaling.rope_type = "llama3";
      c.rope_scaling.factor = 8.0;
      c.rope_scaling.original_max_position_embeddings = 16;
    }
    auto j = c.to_json();
    EXPECT_EQ(j["model_type"], type);
    auto back = LlamaConfig::from_json(j, "x");
    EXPECT_EQ(back.to_json(), j) << type;
    EXPECT_EQ(back.qkv_bias(), c.qkv_bias()) << type;
    EXPECT_EQ(back.sliding_window, c.sliding_window) << type;
    EXPECT_EQ(back.rope_scaling.rope_type, c.rope_scaling.rope_type) << type;
  }
}

TEST(LlamaConfigTypes, RopeScalingInBothSpellings) {
  auto j = hf_config("llama");
  j["rope_theta"] = 500000.0;
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};  // transformers 4.x, old "type" key
  auto c = LlamaConfig::from_json(j, "x");
  EXPECT_EQ(c.rope_scaling.rope_type, "linear");
  EXPECT_EQ(c.rope_scaling.factor, 2.0);
  EXPECT_EQ(c.rope_theta, 500000.0);

  j = hf_config("llama");  // transformers 5.x
  j["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 1000.0}, {"factor", 8.0},
                          {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                          {"original_max_position_embeddings", 64}};
  c = LlamaConfig::from_json(j, "x");
  EXPECT_EQ(c.rope_scaling.rope_type, "llama3");
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 64);
  EXPECT_EQ(c.rope_theta, 1000.0);
}

TEST(LlamaConfigTypes, RefusesInOneLineNamingTheKeyOrValue) {
  auto with = [](const std::string& type, const std::string& key, json value) {
    auto j = hf_config(type);
    j[key] = value;
    return j;
  };
  auto expect = [](const std::string& msg, const std::vector<std::string>& needles) {
    EXPECT_NE(msg.find("dir/config.json"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << msg << " lacks " << n;
  };
  expect(refusal(with("llama", "model_type", "gemma")), {"\"gemma\"", "llama, mistral, qwen2, qwen3"});
  expect(refusal(with("llama", "rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}})), {"\"yarn\""});
  expect(refusal(with("llama", "rope_parameters", {{"rope_type", "dynamic"}, {"rope_theta", 1.0}})), {"\"dynamic\""});
  expect(refusal(with("llama", "rope_scaling", {{"type", "longrope"}})), {"\"longrope\""});
  expect(refusal(with("llama", "quantization_config", {{"bits", 4}})), {"\"quantization_config\""});
  expect(refusal(with("llama", "auto_map", json::object())), {"\"auto_map\""});
  expect(refusal(with("mistral", "attention_bias", true)), {"attention_bias", "mistral"});
  // A family key the type's transformers class ignores, set to "off", is ignored as transformers does.
  EXPECT_NO_THROW(LlamaConfig::from_json(with("mistral", "attention_bias", false), "x"));
  EXPECT_EQ(LlamaConfig::from_json(with("llama", "sliding_window", 4096), "x").sliding_window, 0);
  expect(refusal(with("qwen2", "mlp_bias", true)), {"mlp_bias", "qwen2"});
  expect(refusal(with("qwen2", "use_sliding_window", true)), {"use_sliding_window"});
  expect(refusal(with("qwen3", "layer_types", {"sliding_attention", "full_attention"})), {"sliding_attention"});
  expect(refusal(with("llama", "hidden_act", "gelu")), {"hidden_act"});
  expect(refusal(with("llama", "architectures", {"LlamaForSequenceClassification"})), {"LlamaForSequenceClassification"});
  expect(refusal(with("llama", "rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}})), {"low_freq_factor"});
  expect(refusal(with("llama", "rope_parameters", {{"rope_type", "default"}, {"partial_rotary_factor", 0.5}})),
         {"partial_rotary_factor"});
  expect(refusal(with("llama", "rope_scaling", {{"rope_type", "linear"}, {"factor", 2.0}, {"beta_fast", 32}})),
         {"rope_scaling.beta_fast"});
  // The same checks for configs built field by field (init-model, the pipeline's model section).
  auto c = tiny("mistral");
  c.rope_scaling.rope_type = "yarn";
  EXPECT_NE(user_error_of([&] { c.validate("m"); }).find("\"yarn\""), std::string::npos);
  c = tiny("qwen2");
  c.sliding_window = 8;
  EXPECT_NE(user_error_of([&] { c.validate("m"); }).find("sliding_window"), std::string::npos);
  c = tiny("llama");
  c.model_type = "phi3";
  EXPECT_NE(user_error_of([&] { c.validate("m"); }).find("\"phi3\""), std::string::npos);
}

TEST(LlamaTypes, BiasesWhereTheArchitectureHasThemFrozenAndUntouchedByLora) {
  auto m = random_model(tiny("qwen2"));
  std::set<std::string> biases;
  for (auto& [name, t] : m->state_tensors())
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) biases.insert(name);
  EXPECT_EQ(biases, (std::set<std::string>{"model.layers.0.self_attn.q_proj.bias", "model.layers.0.self_attn.k_proj.bias",
                                           "model.layers.0.self_attn.v_proj.bias", "model.layers.1.self_attn.q_proj.bias",
                                           "model.layers.1.self_attn.k_proj.bias", "model.layers.1.self_attn.v_proj.bias"}));
  std::int64_t count = 0;
  for (auto& [name, t] : m->state_tensors()) count += t.numel();
  EXPECT_EQ(count, m->config.num_parameters());
  // A fresh model's biases are zero, as transformers initialises them.
  auto fresh = moin::make_llama(tiny("qwen2"), torch::kFloat32, torch::kCPU, 1);
  EXPECT_EQ(fresh->model->layers->ptr<moin::LlamaDecoderLayerImpl>(0)->self_attn->q_proj->bias.abs().sum().item<double>(), 0);

  auto q = m->model->layers->ptr<moin::LlamaDecoderLayerImpl>(0)->self_attn->q_proj;
  auto x = torch::randn({3, 32});
  {
    torch::NoGradGuard g;
    EXPECT_TRUE(torch::allclose(q->forward(x), x.matmul(q->weight.t()) + q->bias, 1e-5, 1e-5));
  }
  // Expert training: base frozen, LoRA on every projection; one step leaves the biases as they were.
  m->set_requires_grad(false);
  auto base = m->linears();
  moin::LoraOptions lo;
  lo.r = 2;
  auto adapter = moin::LoraAdapter::create(base, lo);
  adapter.randomize_b(1);
  moin::AdapterSet set(base);
  auto all = moin::LoraRouting::all(set, set.add(adapter));
  auto before = q->bias.clone();
  auto loss = m->forward(torch::randint(0, 50, {1, 6}), nullptr, &all).pow(2).mean();
  loss.backward();
  EXPECT_FALSE(q->bias.requires_grad());
  EXPECT_FALSE(q->bias.grad().defined());
  adapter.merge(base);
  EXPECT_TRUE(torch::equal(q->bias, before));
}

TEST(LlamaTypes, Qwen3NormalisesEachQueryAndKeyHead) {
  auto c = tiny("qwen3");
  c.head_dim = 12;  // neither hidden / heads nor the default 128
  auto m = random_model(c);
  auto attn = m->model->layers->ptr<moin::LlamaDecoderLayerImpl>(0)->self_attn;
  ASSERT_TRUE(attn->q_norm);
  EXPECT_EQ(attn->q_norm->weight.size(0), 12);
  EXPECT_EQ(attn->q_proj->weight.size(0), 4 * 12);
  std::int64_t count = 0;
  for (auto& [name, t] : m->state_tensors()) count += t.numel();
  EXPECT_EQ(count, c.num_parameters());
  // The norms take part: changing one changes the logits.
  torch::NoGradGuard g;
  auto ids = torch::randint(0, 50, {1, 5});
  auto before = m->forward(ids);
  attn->k_norm->weight.mul_(2.0);
  EXPECT_GT((m->forward(ids) - before).abs().max().item<double>(), 1e-4);
}

TEST(LlamaTypes, SlidingWindowSeesExactlyTheLastWindowPositions) {
  auto c = tiny("mistral");
  c.num_hidden_layers = 1;  // one layer: position p depends on tokens p - window + 1 .. p only
  c.sliding_window = 4;
  auto m = random_model(c);
  torch::NoGradGuard g;
  auto ids = torch::randint(1, 50, {1, 12});
  auto changed = ids.clone();
  changed[0][0] = 0;
  auto diff = (m->forward(ids) - m->forward(changed)).abs().amax(-1)[0];
  for (int p = 0; p < 12; ++p) {
    if (p < 4) EXPECT_GT(diff[p].item<double>(), 1e-6) << "position " << p << " must still see token 0";
    else EXPECT_EQ(diff[p].item<double>(), 0.0) << "position " << p << " must not see token 0";
  }
  // A window at least as long as the sequence is plain causal attention.
  auto wide = c;
  wide.sliding_window = 12;
  LlamaForCausalLM w(wide), plain([&] { auto p = wide; p.sliding_window = 0; return p; }());
  w->init_weights(5, 0.2);
  plain->init_weights(5, 0.2);
  EXPECT_TRUE(torch::equal(w->forward(ids), plain->forward(ids)));
}

TEST(LlamaTypes, SlidingWindowWithKVCacheMatchesFullRecompute) {
  auto c = tiny("mistral");
  c.sliding_window = 3;
  auto m = random_model(c);
  torch::NoGradGuard g;
  auto ids = torch::randint(0, 50, {2, 16});
  auto full = m->forward(ids);
  moin::KVCache cache;
  std::vector<torch::Tensor> parts = {m->forward(ids.narrow(1, 0, 5), &cache)};
  parts.push_back(m->forward(ids.narrow(1, 5, 4), &cache));  // a chunk after a cache, crossing the window
  for (int t = 9; t < 16; ++t) parts.push_back(m->forward(ids.narrow(1, t, 1), &cache));
  EXPECT_LT((torch::cat(parts, 1) - full).abs().max().item<double>(), 1e-5);
}

TEST(LlamaTypes, RopeScalingFrequencies) {
  auto c = tiny("llama");
  c.head_dim = 32;
  auto plain = moin::rope_inv_freq(c, torch::kCPU).to(torch::kFloat64);
  c.rope_scaling.rope_type = "linear";
  c.rope_scaling.factor = 4.0;
  EXPECT_TRUE(torch::allclose(moin::rope_inv_freq(c, torch::kCPU).to(torch::kFloat64), plain / 4.0, 1e-7, 0));
  // Llama 3.1's rule, in float64 from its definition: wavelengths below original / high_freq_factor kept,
  // above original / low_freq_factor divided by factor, a linear blend in 1 / wavelength between.
  c.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 40};
  auto got = moin::rope_inv_freq(c, torch::kCPU).to(torch::kFloat64);
  int kept = 0, divided = 0, blended = 0;
  for (int i = 0; i < plain.size(0); ++i) {
    const double f = plain[i].item<double>(), wavelen = 2 * M_PI / f;
    double want;
    if (wavelen < 40.0 / 4.0) want = f, ++kept;
    else if (wavelen > 40.0 / 1.0) want = f / 8.0, ++divided;
    else {
      const double s = (40.0 / wavelen - 1.0) / (4.0 - 1.0);
      want = (1 - s) * f / 8.0 + s * f;
      ++blended;
    }
    EXPECT_NEAR(got[i].item<double>(), want, 1e-6 * want) << i;
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
}

TEST(Checkpoint, EveryTypeRoundTripsThroughAFolder) {
  for (const std::string type : {"llama", "mistral", "qwen2", "qwen3"}) {
    TempDir dir;
    auto c = tiny(type);
    if (type == "llama") c.mlp_bias = c.attention_bias = true;
    if (type == "mistral") c.sliding_window = 3;
    auto m = random_model(c);
    moin::save_llama(m, dir / "m");
    auto back = moin::load_llama(dir / "m");
    torch::NoGradGuard g;
    auto ids = torch::randint(0, 50, {1, 9});
    EXPECT_TRUE(torch::equal(back->forward(ids), m->forward(ids))) << type;
    EXPECT_EQ(back->config.to_json(), m->config.to_json()) << type;
  }
}

TEST(Checkpoint, AMissingBiasIsAnErrorNeverARandomInit) {
  TempDir dir;
  auto m = random_model(tiny("qwen2"));
  moin::save_llama(m, dir / "m");
  auto tensors = moin::st::load(dir / "m/model.safetensors");
  tensors.erase("model.layers.1.self_attn.k_proj.bias");
  std::vector<std::pair<std::string, torch::Tensor>> kept(tensors.begin(), tensors.end());
  moin::st::save(dir / "m/model.safetensors", kept, {{"format", "pt"}});
  EXPECT_NE(user_error_of([&] { moin::load_llama(dir / "m"); }).find("model.layers.1.self_attn.k_proj.bias"),
            std::string::npos);
  // The other way round: a bias the architecture lacks is an unexpected tensor.
  auto cfg = moin::fs::read_json(dir / "m/config.json");
  cfg["model_type"] = "llama";
  cfg["architectures"] = {"LlamaForCausalLM"};
  cfg.erase("use_sliding_window");
  cfg.erase("sliding_window");
  moin::fs::write_json_atomic(dir / "m/config.json", cfg);
  EXPECT_NE(user_error_of([&] { moin::load_llama(dir / "m"); }).find(".bias"), std::string::npos);
}

TEST(Checkpoint, ShardedSaveWritesTheHuggingFaceIndexAndLoadsBack) {
  TempDir dir;
  auto m = random_model(tiny("qwen2"));
  moin::save_llama(m, dir / "m", 20000);  // a few tensors per shard
  namespace stdfs = std::filesystem;
  EXPECT_FALSE(stdfs::exists(dir / "m/model.safetensors"));
  auto index = moin::fs::read_json(dir / "m/model.safetensors.index.json");
  std::set<std::string> files;
  std::uint64_t bytes = 0;
  for (auto& [name, t] : m->state_tensors()) {
    ASSERT_TRUE(index["weight_map"].contains(name)) << name;
    files.insert(index["weight_map"][name].get<std::string>());
    bytes += t.nbytes();
  }
  EXPECT_EQ(index["metadata"]["total_size"], bytes);
  EXPECT_GT(files.size(), 2u);
  const std::string last = "model-" + std::string(5 - std::to_string(files.size()).size(), '0') +
                           std::to_string(files.size()) + "-of-" +
                           std::string(5 - std::to_string(files.size()).size(), '0') + std::to_string(files.size()) +
                           ".safetensors";
  EXPECT_TRUE(files.count(last)) << last;
  for (const auto& f : files) {
    EXPECT_TRUE(stdfs::exists(dir / ("m/" + f))) << f;
    // No shard above the limit unless it holds a single larger tensor.
    auto st = moin::st::File::open(dir / ("m/" + f));
    std::uint64_t size = 0;
    for (const auto& t : st.tensors()) size += t.nbytes();
    EXPECT_TRUE(size <= 20000 || st.tensors().size() == 1) << f;
  }
  auto back = moin::load_llama(dir / "m");
  torch::NoGradGuard g;
  auto ids = torch::randint(0, 50, {1, 7});
  EXPECT_TRUE(torch::equal(back->forward(ids), m->forward(ids)));
  // Saving again unsharded leaves no stale shard or index behind (either would be read).
  moin::save_llama(m, dir / "m");
  for (const auto& f : files) EXPECT_FALSE(stdfs::exists(dir / ("m/" + f))) << f;
  EXPECT_FALSE(stdfs::exists(dir / "m/model.safetensors.index.json"));
  EXPECT_TRUE(torch::equal(moin::load_llama(dir / "m")->forward(ids), m->forward(ids)));
}

TEST(Checkpoint, ShardSizesParseLikeTransformers) {
  EXPECT_EQ(moin::parse_shard_size("5GB"), 5000000000ull);
  EXPECT_EQ(moin::parse_shard_size("40KB"), 40000ull);
  EXPECT_EQ(moin::parse_shard_size("2GiB"), 2ull << 30);
  EXPECT_EQ(moin::parse_shard_size("3mib"), 3ull << 20);
  EXPECT_EQ(moin::parse_shard_size("1000"), 1000ull);
  for (const char* bad : {"", "GB", "-5GB", "5 GB", "5TB", "0KB", "1.5GB"})
    EXPECT_NE(user_error_of([&] { moin::parse_shard_size(bad); }).find("max_shard_size"), std::string::npos) << bad;
}

}  // namespace
