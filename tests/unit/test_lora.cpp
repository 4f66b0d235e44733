// LoRA adapters on bare Linears shaped like a tiny Llama: init, adapter sets, merge/unmerge, gradients (a
// finite-difference check in double precision), the PEFT folder round trip and the rejection of adapters
// that do not fit. The comparison with PEFT itself is tests/python/test_peft_ref.py.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "moin/model/llama.h"
#include "moin/model/adapter_set.h"
#include "moin/model/safetensors.h"
#include "moin/model/safetensors_torch.h"
#include "test_util.h"

namespace moin {
namespace {

// The projections of a Llama with `layers` blocks, hidden width h, kv width kv, MLP width m, HF names.
NamedLinears tiny_llama(int layers, std::int64_t h = 8, std::int64_t kv = 4, std::int64_t m = 12,
                        torch::ScalarType dtype = torch::kFloat32, std::uint64_t seed = 1) {
  torch::manual_seed(seed);
  NamedLinears out;
  for (const auto& p : llama_projection_shapes(layers, h, kv, m)) {
    Linear lin(p.in_features, p.out_features);
    {
      torch::NoGradGuard g;
      lin->weight.normal_(0, 0.5);
    }
    lin->to(dtype);
    lin->weight.requires_grad_(false);  // the base is frozen
    lin->lora_slot = static_cast<std::int64_t>(out.size());
    out.emplace_back(p.name, lin);
  }
  return out;
}

// Gives B random values (a fresh adapter has B = 0 and would make every test trivially pass).
void randomize_b(LoraAdapter& a, std::uint64_t seed = 7) {
  torch::NoGradGuard g;
  torch::manual_seed(seed);
  for (const auto& m : a.modules()) const_cast<torch::Tensor&>(m.B).normal_(0, 0.3);
}

// Each projection applied to a fixed random input of its width.
std::vector<torch::Tensor> outputs(const NamedLinears& base, const LoraRouting* lora = nullptr, std::uint64_t seed = 3) {
  torch::manual_seed(seed);
  std::vector<torch::Tensor> ys;
  for (const auto& [name, lin] : base) {
    auto x = torch::randn({2, 3, lin->in_features}, lin->weight.options().requires_grad(false));
    ys.push_back(lin.ptr()->forward(x, lora));
  }
  return ys;
}

// A set holding `a`, and the routing that puts it on every row (constructed in place: the routing points
// at the set).
struct Attached {
  AdapterSet set;
  LoraRouting all;
  Attached(const NamedLinears& base, const LoraAdapter& a) : set(base) { all = LoraRouting::all(set, set.add(a)); }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no UserError)";
}

TEST(Lora, OptionsDefaultsAndScaling) {
  LoraOptions o;
  EXPECT_EQ(o.r, 16);
  EXPECT_DOUBLE_EQ(o.alpha, 32.0);
  EXPECT_EQ(o.target_modules.size(), 7u);
  EXPECT_DOUBLE_EQ(o.scaling(), 2.0);
  o.use_rslora = true;
  EXPECT_DOUBLE_EQ(o.scaling(), 32.0 / 4.0);
  o.r = 0;
  EXPECT_THROW(o.validate(), UserError);
  LoraOptions d;
  d.target_modules = {"q_proj", "q_proj"};
  EXPECT_THROW(d.validate(), UserError);
}

TEST(Lora, CreateInitialisesLikePeft) {
  auto base = tiny_llama(2, 64, 32, 96);
  LoraOptions o;
  o.r = 8;
  o.seed = 5;
  auto a = LoraAdapter::create(base, o);
  ASSERT_EQ(a.modules().size(), 14u);
  for (const auto& m : a.modules()) {
    const auto in = m.A.size(1);
    const double bound = 1.0 / std::sqrt(double(in));
    EXPECT_EQ(m.A.sizes(), (std::vector<std::int64_t>{8, in}));
    EXPECT_LE(m.A.abs().max().item<double>(), bound);
    // Uniform(-b, b) has variance b^2 / 3: loose, but catches a wrong fan (in vs out) or a normal draw.
    EXPECT_NEAR(m.A.var().item<double>(), bound * bound / 3, 0.25 * bound * bound / 3) << m.name;
    EXPECT_EQ(m.B.count_nonzero().item<std::int64_t>(), 0) << m.name;
    EXPECT_TRUE(m.A.requires_grad());
    EXPECT_TRUE(m.B.requires_grad());
  }
  // Same seed, same adapter; another seed, another one.
  auto b = LoraAdapter::create(base, o);
  o.seed = 6;
  auto c = LoraAdapter::create(base, o);
  EXPECT_TRUE(torch::equal(a.modules()[3].A, b.modules()[3].A));
  EXPECT_FALSE(torch::equal(a.modules()[3].A, c.modules()[3].A));
  EXPECT_EQ(a.num_parameters(), 2 * (8 * (64 + 64) + 2 * 8 * (64 + 32) + 8 * (64 + 64) + 2 * 8 * (64 + 96) + 8 * (96 + 64)));

  // B = 0: the adapted model starts equal to the base.
  auto y0 = outputs(base);
  Attached at(base, a);
  auto y1 = outputs(base, &at.all);
  for (std::size_t i = 0; i < y0.size(); ++i) EXPECT_TRUE(torch::equal(y0[i], y1[i]));
}

TEST(Lora, TargetSubsetAndUnknownTarget) {
  auto base = tiny_llama(2);
  LoraOptions o;
  o.r = 2;
  o.target_modules = {"q_proj", "v_proj"};
  auto a = LoraAdapter::create(base, o);
  ASSERT_EQ(a.modules().size(), 4u);
  EXPECT_EQ(a.modules()[0].name, "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(a.modules()[1].name, "model.layers.0.self_attn.v_proj");
  o.target_modules = {"q_proj", "qkv_proj"};
  auto msg = error_of([&] { LoraAdapter::create(base, o); });
  EXPECT_NE(msg.find("qkv_proj"), std::string::npos) << msg;
  EXPECT_NE(msg.find("matches no projection"), std::string::npos) << msg;
}

TEST(Lora, AdapterSetComputesScaledUpdateAndSharesTensors) {
  auto base = tiny_llama(1);
  LoraOptions o;
  o.r = 4;
  o.alpha = 6;
  auto a = LoraAdapter::create(base, o);
  randomize_b(a);
  Attached at(base, a);
  const auto& [name, lin] = base[4];  // gate_proj
  const auto& m = a.modules()[4];
  ASSERT_EQ(m.name, name);
  EXPECT_EQ(at.set.entry(lin->lora_slot, 0)->A.data_ptr(), m.A.data_ptr());  // by pointer, no copy
  torch::NoGradGuard g;
  auto x = torch::randn({5, lin->in_features});
  auto ref = x.matmul(lin->weight.t()) + 1.5 * x.matmul(m.A.t()).matmul(m.B.t());
  EXPECT_TRUE(torch::allclose(lin.ptr()->forward(x, &at.all), ref, 1e-5, 1e-5));
  // No routing: the bare base, whatever sets exist.
  EXPECT_TRUE(torch::allclose(lin.ptr()->forward(x), x.matmul(lin->weight.t()), 1e-6, 1e-6));
}

TEST(Lora, RsLoraScaling) {
  auto base = tiny_llama(1);
  LoraOptions o;
  o.r = 4;
  o.alpha = 8;
  o.use_rslora = true;
  auto a = LoraAdapter::create(base, o);
  randomize_b(a);
  EXPECT_DOUBLE_EQ(a.scaling(), 4.0);  // 8 / sqrt(4), not 8 / 4
  Attached at(base, a);
  EXPECT_DOUBLE_EQ(at.set.entry(0, 0)->scaling, 4.0);
  torch::NoGradGuard g;
  const auto& lin = base[0].second;
  const auto& m = a.modules()[0];
  auto x = torch::randn({3, lin->in_features});
  auto ref = x.matmul(lin->weight.t()) + 4.0 * x.matmul(m.A.t()).matmul(m.B.t());
  EXPECT_TRUE(torch::allclose(lin.ptr()->forward(x, &at.all), ref, 1e-5, 1e-5));
}

TEST(Lora, MergeAndUnmergeAgreeWithAttached) {
  auto base = tiny_llama(2);
  std::vector<torch::Tensor> w0;
  for (const auto& [n, lin] : base) w0.push_back(lin->weight.clone());
  LoraOptions o;
  o.r = 4;
  auto a = LoraAdapter::create(base, o);
  randomize_b(a);
  std::vector<torch::Tensor> attached;
  {
    Attached at(base, a);
    attached = outputs(base, &at.all);
  }
  a.merge(base);
  auto merged = outputs(base);
  for (std::size_t i = 0; i < attached.size(); ++i)
    EXPECT_LT((attached[i] - merged[i]).abs().max().item<double>(), 1e-5) << base[i].first;
  EXPECT_THROW(a.merge(base), UserError);
  EXPECT_THROW(AdapterSet(base).add(a), UserError);  // a merged adapter would count twice
  a.unmerge(base);
  for (std::size_t i = 0; i < base.size(); ++i)
    EXPECT_LT((base[i].second->weight - w0[i]).abs().max().item<double>(), 1e-5) << base[i].first;
  EXPECT_FALSE(base[0].second->weight.requires_grad());
}

TEST(Lora, MergeBf16WeightsAccumulatesInFloat) {
  auto base = tiny_llama(1, 8, 4, 12, torch::kBFloat16);
  LoraOptions o;
  o.r = 2;
  auto a = LoraAdapter::create(base, o);
  randomize_b(a);
  EXPECT_EQ(a.modules()[0].A.scalar_type(), torch::kBFloat16);
  auto w = base[0].second->weight.to(torch::kFloat32);
  const auto& m = a.modules()[0];
  auto want = (w + a.scaling() * m.B.to(torch::kFloat32).matmul(m.A.to(torch::kFloat32))).to(torch::kBFloat16);
  a.merge(base);
  EXPECT_TRUE(torch::equal(base[0].second->weight, want));
}

TEST(Lora, OnlyAdapterTensorsGetGradients) {
  auto base = tiny_llama(2);
  LoraOptions o;
  o.r = 3;
  o.dropout = 0.1;
  auto a = LoraAdapter::create(base, o);
  randomize_b(a);
  Attached at(base, a);
  for (const auto& [n, lin] : base) lin.ptr()->train();
  torch::Tensor loss = torch::zeros({});
  for (const auto& y : outputs(base, &at.all)) loss = loss + y.pow(2).mean();
  loss.backward();
  for (const auto& [n, lin] : base) {
    EXPECT_FALSE(lin->weight.grad().defined()) << n;
    EXPECT_FALSE(lin->weight.requires_grad()) << n;
  }
  for (const auto& p : a.parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_GT(p.grad().abs().sum().item<double>(), 0.0);
  }
  EXPECT_EQ(a.parameters().size(), 28u);
}

// Central differences of L = sum(g * lin(x)) with respect to every element of A, B and x, in double.
TEST(Lora, FiniteDifferenceGradientCheck) {
  torch::manual_seed(11);
  NamedLinears base;
  Linear lin(5, 4);
  lin->to(torch::kFloat64);
  {
    torch::NoGradGuard ng;
    lin->weight.normal_();
  }
  lin->weight.requires_grad_(false);
  lin->lora_slot = 0;
  base.emplace_back("model.layers.0.self_attn.q_proj", lin);
  LoraOptions o;
  o.r = 3;
  o.alpha = 5;
  o.target_modules = {"q_proj"};
  auto a = LoraAdapter::create(base, o);
  ASSERT_EQ(a.modules()[0].A.scalar_type(), torch::kFloat64);
  randomize_b(a);
  Attached at(base, a);
  auto x = torch::randn({2, 5}, torch::kFloat64).requires_grad_(true);
  auto g = torch::randn({2, 4}, torch::kFloat64);
  auto loss = [&] { return (lin->forward(x, &at.all) * g).sum(); };
  loss().backward();
  const double eps = 1e-6;
  std::vector<torch::Tensor> wrt = {a.modules()[0].A, a.modules()[0].B, x};
  for (auto& t : wrt) {
    auto grad = t.grad().clone();
    auto flat = t.detach().view(-1);  // shares storage with t
    for (std::int64_t i = 0; i < flat.numel(); ++i) {
      const double v = flat[i].item<double>();
      double up, down;
      {
        torch::NoGradGuard ng;
        flat[i] = v + eps;
        up = loss().item<double>();
        flat[i] = v - eps;
        down = loss().item<double>();
        flat[i] = v;
      }
      const double fd = (up - down) / (2 * eps);
      EXPECT_NEAR(grad.view(-1)[i].item<double>(), fd, 1e-7 * std::max(1.0, std::abs(fd))) << "element " << i;
    }
  }
}

TEST(Lora, SaveLoadRoundTripIsBitExact) {
  test::TempDir tmp;
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    auto base = tiny_llama(2, 8, 4, 12, dtype);
    LoraOptions o;
    o.r = 4;
    o.alpha = 12;
    o.dropout = 0.05;
    o.use_rslora = true;
    o.target_modules = {"v_proj", "q_proj", "down_proj"};
    auto a = LoraAdapter::create(base, o);
    randomize_b(a);
    const auto dir = tmp / (dtype == torch::kFloat32 ? "fp32" : "bf16");
    a.save(dir, "/models/tiny");
    auto b = LoraAdapter::load(dir, base);
    ASSERT_EQ(b.modules().size(), a.modules().size());
    for (std::size_t i = 0; i < a.modules().size(); ++i) {
      EXPECT_EQ(b.modules()[i].name, a.modules()[i].name);
      EXPECT_EQ(b.modules()[i].A.scalar_type(), dtype);
      EXPECT_TRUE(torch::equal(a.modules()[i].A, b.modules()[i].A)) << a.modules()[i].name;
      EXPECT_TRUE(torch::equal(a.modules()[i].B, b.modules()[i].B)) << a.modules()[i].name;
      EXPECT_FALSE(b.modules()[i].A.requires_grad());
    }
    EXPECT_EQ(b.options().r, 4);
    EXPECT_DOUBLE_EQ(b.options().alpha, 12);
    EXPECT_DOUBLE_EQ(b.options().dropout, 0.05);
    EXPECT_TRUE(b.options().use_rslora);
    EXPECT_EQ(b.options().target_modules, (std::vector<std::string>{"down_proj", "q_proj", "v_proj"}));
    EXPECT_EQ(b.base_model_name_or_path(), "/models/tiny");
    // Saved again, the weights file is byte for byte the same.
    b.save(dir + "-again");
    EXPECT_EQ(test::read_file(dir + "/adapter_model.safetensors"),
              test::read_file(dir + "-again/adapter_model.safetensors"));
    // Loading for training gives independent leaves that take gradients.
    auto c = LoraAdapter::load(dir, base, {std::nullopt, torch::kFloat64, true});
    EXPECT_EQ(c.modules()[0].A.scalar_type(), torch::kFloat64);
    EXPECT_TRUE(c.modules()[0].A.requires_grad() && c.modules()[0].A.is_leaf());
  }
}

TEST(Lora, SavesThePeftLayout) {
  test::TempDir tmp;
  auto base = tiny_llama(2);
  LoraOptions o;
  o.r = 4;
  o.alpha = 8;
  auto a = LoraAdapter::create(base, o);
  a.save(tmp / "ad", "base-model");
  auto cfg = fs::read_json(tmp / "ad/adapter_config.json");
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["task_type"], "CAUSAL_LM");
  EXPECT_EQ(cfg["r"], 4);
  EXPECT_EQ(cfg["lora_alpha"], 8.0);
  EXPECT_EQ(cfg["bias"], "none");
  EXPECT_EQ(cfg["fan_in_fan_out"], false);
  EXPECT_EQ(cfg["inference_mode"], true);
  EXPECT_EQ(cfg["use_rslora"], false);
  EXPECT_EQ(cfg["base_model_name_or_path"], "base-model");
  EXPECT_EQ(cfg["target_modules"].size(), 7u);
  auto f = st::File::open(tmp / "ad/adapter_model.safetensors");
  EXPECT_EQ(f.tensors().size(), 28u);
  const auto& qa = f.at("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ(qa.shape, (std::vector<std::int64_t>{4, 8}));
  EXPECT_EQ(qa.dtype, st::DType::F32);
  const auto& db = f.at("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
  EXPECT_EQ(db.shape, (std::vector<std::int64_t>{8, 4}));
  // No stray temporary files.
  int n = 0;
  for (auto it = std::filesystem::directory_iterator(tmp / "ad"); it != std::filesystem::directory_iterator(); ++it) ++n;
  EXPECT_EQ(n, 2);
}

TEST(Lora, RejectsAdaptersThatDoNotFit) {
  test::TempDir tmp;
  LoraOptions o;
  o.r = 4;
  auto two = tiny_llama(2);
  auto a = LoraAdapter::create(two, o);
  const auto dir = tmp / "two-layers";
  a.save(dir);

  // Wider hidden size: a shape mismatch, naming the folder and the tensor.
  auto msg = error_of([&] { LoraAdapter::load(dir, tiny_llama(2, 16, 8, 24)); });
  EXPECT_NE(msg.find(dir), std::string::npos) << msg;
  EXPECT_NE(msg.find("tensor base_model.model.model.layers.0.mlp.down_proj.lora_A.weight has shape [4, 12] but the "
                     "base model with r=4 needs [4, 24]"),
            std::string::npos)
      << msg;

  // Fewer layers in the base: the adapter names a layer it does not have.
  msg = error_of([&] { LoraAdapter::load(dir, tiny_llama(1)); });
  EXPECT_NE(msg.find(dir), std::string::npos) << msg;
  EXPECT_NE(msg.find("layer 1, but the base model has 1 layers"), std::string::npos) << msg;

  // More layers in the base: the adapter lacks the last layer's tensors.
  msg = error_of([&] { LoraAdapter::load(dir, tiny_llama(3)); });
  EXPECT_NE(msg.find("model.layers.2.self_attn.q_proj.lora_A.weight is missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find("covers 2 layers"), std::string::npos) << msg;

  // The config's rank disagrees with the tensors.
  auto cfg = fs::read_json(dir + "/adapter_config.json");
  cfg["r"] = 8;
  fs::write_json_atomic(dir + "/adapter_config.json", cfg);
  msg = error_of([&] { LoraAdapter::load(dir, two); });
  EXPECT_NE(msg.find("r=8"), std::string::npos) << msg;

  // Tensors for a module the config does not target.
  cfg["r"] = 4;
  cfg["target_modules"] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"};
  fs::write_json_atomic(dir + "/adapter_config.json", cfg);
  msg = error_of([&] { LoraAdapter::load(dir, two); });
  EXPECT_NE(msg.find("down_proj"), std::string::npos) << msg;
  EXPECT_NE(msg.find("target_modules"), std::string::npos) << msg;

  // A target the base does not have.
  cfg["target_modules"] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "c_attn"};
  fs::write_json_atomic(dir + "/adapter_config.json", cfg);
  msg = error_of([&] { LoraAdapter::load(dir, two); });
  EXPECT_NE(msg.find("c_attn"), std::string::npos) << msg;

  // Not a plain LoRA.
  cfg["target_modules"] = "all-linear";
  cfg["use_dora"] = true;
  fs::write_json_atomic(dir + "/adapter_config.json", cfg);
  msg = error_of([&] { LoraAdapter::load(dir, two); });
  EXPECT_NE(msg.find("DoRA"), std::string::npos) << msg;
  cfg["use_dora"] = false;
  fs::write_json_atomic(dir + "/adapter_config.json", cfg);
  EXPECT_NO_THROW(LoraAdapter::load(dir, two));  // "all-linear" is PEFT's spelling of every projection

  // Missing files and folders.
  msg = error_of([&] { LoraAdapter::load(tmp / "nope", two); });
  EXPECT_NE(msg.find("nope"), std::string::npos) << msg;
  std::filesystem::remove(dir + "/adapter_model.safetensors");
  msg = error_of([&] { LoraAdapter::load(dir, two); });
  EXPECT_NE(msg.find("adapter_model.safetensors is missing"), std::string::npos) << msg;
}

TEST(Lora, LoadsAdaptersWrittenByOthers) {
  // An adapter as a foreign tool may write it: extra config keys, tensors in another order, B stored as
  // float16 while the base is float32 (converted on load).
  test::TempDir tmp;
  auto base = tiny_llama(1);
  torch::manual_seed(2);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  auto qa = torch::randn({2, 8}), qb = torch::randn({8, 2}).to(torch::kFloat16);
  tensors.emplace_back(peft_lora_b_name("model.layers.0.self_attn.q_proj"), qb);
  tensors.emplace_back(peft_lora_a_name("model.layers.0.self_attn.q_proj"), qa);
  std::filesystem::create_directories(tmp / "foreign");
  st::save(tmp / "foreign/adapter_model.safetensors", tensors);
  fs::write_json_atomic(tmp / "foreign/adapter_config.json",
                        {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4}, {"target_modules", {"q_proj"}},
                         {"some_future_key", 1}, {"task_type", "CAUSAL_LM"}});
  auto a = LoraAdapter::load(tmp / "foreign", base);
  ASSERT_EQ(a.modules().size(), 1u);
  EXPECT_DOUBLE_EQ(a.scaling(), 2.0);
  EXPECT_TRUE(torch::equal(a.modules()[0].A, qa));
  EXPECT_TRUE(torch::equal(a.modules()[0].B, qb.to(torch::kFloat32)));
  EXPECT_EQ(a.modules()[0].B.scalar_type(), torch::kFloat32);
}

}  // namespace
}  // namespace moin

namespace moin {
namespace {

TEST(LoraCli, InitWritesAnAdapterThatLoadsAndRejectsUnknownTargets) {
  test::TempDir tmp;
  LlamaConfig c;
  c.vocab_size = 32;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  std::filesystem::create_directories(tmp / "base");
  c.save(tmp / "base/config.json");
  auto r = test::run_moin("lora init -q --model " + (tmp / "base") + " --output " + (tmp / "ad") +
                          " --rank 2 --targets q_proj v_proj --seed 4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  LlamaForCausalLM model(c);
  auto a = LoraAdapter::load(tmp / "ad", model->linears());
  EXPECT_EQ(a.modules().size(), 4u);
  EXPECT_EQ(a.options().r, 2);
  EXPECT_TRUE(std::filesystem::exists(tmp / "ad/lora.config.json"));

  r = test::run_moin("lora init --model " + (tmp / "base") + " --output " + (tmp / "ad2") + " --targets c_attn");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("c_attn"), std::string::npos) << r.output;
  r = test::run_moin("config lora");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("\"use_rslora\": false"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace moin
