// Checkpoints (save/load, validation), llama2.c import and generation, including the real stories260K
// model whose greedy output from BOS is known (llama2.c's reference run, ../shared/data/README.md).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "moin/core/error.h"
#include "moin/data/tokenizer.h"
#include "moin/model/checkpoint.h"
#include "moin/model/generate.h"
#include "moin/model/llama2c.h"
#include "moin/model/safetensors_torch.h"
#include "test_util.h"

namespace {

using moin::LlamaConfig;
using moin::LlamaForCausalLM;
using moin::test::TempDir;
using moin::test::user_error_of;

const char* kStoriesReference =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she "
    "saw a big, red ball.";

LlamaConfig small_config(bool tied) {
  LlamaConfig c;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 40;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 200;
  c.tie_word_embeddings = tied;
  return c;
}

torch::Tensor ids(std::vector<std::int64_t> v) { return torch::tensor(v).view({1, -1}); }

TEST(Checkpoint, SaveLoadRoundTripKeepsLogits) {
  for (bool tied : {false, true}) {
    TempDir dir;
    auto m = moin::make_llama(small_config(tied), torch::kFloat32, torch::kCPU, 5, 0.2);
    moin::save_llama(m, dir / "ckpt");
    EXPECT_TRUE(moin::is_llama_checkpoint(dir / "ckpt"));
    auto f = moin::st::File::open(dir / "ckpt/model.safetensors");
    EXPECT_EQ(f.find("lm_head.weight") != nullptr, !tied);
    EXPECT_EQ(f.metadata().at("format"), "pt");
    auto back = moin::load_llama(dir / "ckpt");
    torch::NoGradGuard g;
    EXPECT_TRUE(torch::equal(back->forward(ids({1, 2, 3, 4})), m->forward(ids({1, 2, 3, 4})))) << tied;
    EXPECT_EQ(back->config.to_json(), m->config.to_json());
  }
}

TEST(Checkpoint, HalfPrecisionStorageAndDtypeConversionOnLoad) {
  TempDir dir;
  auto m = moin::make_llama(small_config(false), torch::kBFloat16, torch::kCPU, 6, 0.2);
  EXPECT_EQ(m->dtype(), torch::kBFloat16);
  moin::save_llama(m, dir / "bf16");
  EXPECT_EQ(LlamaConfig::load(dir / "bf16").torch_dtype, "bfloat16");
  EXPECT_EQ(moin::st::File::open(dir / "bf16/model.safetensors").at("model.norm.weight").dtype,
            moin::st::DType::BF16);
  auto f32 = moin::load_llama(dir / "bf16", torch::kFloat32);
  EXPECT_EQ(f32->dtype(), torch::kFloat32);
  // bf16 -> fp32 is exact, so the weights are identical.
  EXPECT_TRUE(torch::equal(f32->model->embed_tokens->weight, m->model->embed_tokens->weight.to(torch::kFloat32)));
}

TEST(Checkpoint, SameSeedSameModelAcrossDtypes) {
  auto a = moin::make_llama(small_config(true), torch::kFloat32, torch::kCPU, 9);
  auto b = moin::make_llama(small_config(true), torch::kFloat32, torch::kCPU, 9);
  auto c = moin::make_llama(small_config(true), torch::kFloat32, torch::kCPU, 10);
  EXPECT_TRUE(torch::equal(a->model->embed_tokens->weight, b->model->embed_tokens->weight));
  EXPECT_FALSE(torch::equal(a->model->embed_tokens->weight, c->model->embed_tokens->weight));
  EXPECT_NEAR(a->model->embed_tokens->weight.std().item<double>(), 0.02, 0.002);
  EXPECT_TRUE(torch::equal(a->model->norm->weight, torch::ones({32})));
}

TEST(Checkpoint, ValidationNamesFileAndTensor) {
  TempDir dir;
  auto m = moin::make_llama(small_config(false), torch::kFloat32, torch::kCPU, 1);
  moin::save_llama(m, dir / "ok");
  auto tensors = m->state_tensors();

  auto write_variant = [&](const std::string& name, std::vector<std::pair<std::string, torch::Tensor>> ts) {
    std::filesystem::create_directories(dir.path / name);
    std::filesystem::copy_file(dir / "ok/config.json", dir / (name + "/config.json"));
    moin::st::save(dir / (name + "/model.safetensors"), ts);
    return dir / name;
  };
  auto missing = tensors;
  missing.erase(missing.begin() + 3);
  auto msg = user_error_of([&] { moin::load_llama(write_variant("missing", missing)); });
  EXPECT_NE(msg.find(tensors[3].first), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;

  auto extra = tensors;
  extra.emplace_back("model.layers.7.mlp.up_proj.weight", torch::zeros({2, 2}));
  msg = user_error_of([&] { moin::load_llama(write_variant("extra", extra)); });
  EXPECT_NE(msg.find("model.layers.7.mlp.up_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("extra/model.safetensors"), std::string::npos) << msg;

  auto shape = tensors;
  shape[5].second = torch::zeros({3, 3});
  msg = user_error_of([&] { moin::load_llama(write_variant("shape", shape)); });
  EXPECT_NE(msg.find(tensors[5].first), std::string::npos) << msg;
  EXPECT_NE(msg.find("shape"), std::string::npos) << msg;

  auto ints = tensors;
  ints[0].second = ints[0].second.to(torch::kInt32);
  msg = user_error_of([&] { moin::load_llama(write_variant("ints", ints)); });
  EXPECT_NE(msg.find("I32"), std::string::npos) << msg;

  std::filesystem::create_directories(dir.path / "noconfig");
  msg = user_error_of([&] { moin::load_llama(dir / "noconfig"); });
  EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
}

// Writes a legacy llama2.c file of `m` (interleaved RoPE rows), as llama2.c's legacy_export does.
void write_llama2c_legacy(LlamaForCausalLM& m, const std::string& path) {
  const auto& c = m->config;
  std::ofstream out(path, std::ios::binary);
  std::int32_t header[7] = {int(c.hidden_size), int(c.intermediate_size), int(c.num_hidden_layers),
                            int(c.num_attention_heads), int(c.num_key_value_heads),
                            int(c.tie_word_embeddings ? c.vocab_size : -c.vocab_size), int(c.max_position_embeddings)};
  out.write(reinterpret_cast<const char*>(header), sizeof header);
  auto put = [&](const torch::Tensor& t) {
    auto f = t.detach().to(torch::kFloat32).contiguous();
    out.write(reinterpret_cast<const char*>(f.data_ptr<float>()), f.numel() * 4);
  };
  auto layer = [&](std::int64_t l) { return m->model->layers->ptr<moin::LlamaDecoderLayerImpl>(l); };
  const auto L = c.num_hidden_layers;
  put(m->model->embed_tokens->weight);
  for (int l = 0; l < L; ++l) put(layer(l)->input_layernorm->weight);
  for (int l = 0; l < L; ++l) put(moin::rope_rows_to_interleaved(layer(l)->self_attn->q_proj->weight, c.num_attention_heads));
  for (int l = 0; l < L; ++l) put(moin::rope_rows_to_interleaved(layer(l)->self_attn->k_proj->weight, c.num_key_value_heads));
  for (int l = 0; l < L; ++l) put(layer(l)->self_attn->v_proj->weight);
  for (int l = 0; l < L; ++l) put(layer(l)->self_attn->o_proj->weight);
  for (int l = 0; l < L; ++l) put(layer(l)->post_attention_layernorm->weight);
  for (int l = 0; l < L; ++l) put(layer(l)->mlp->gate_proj->weight);
  for (int l = 0; l < L; ++l) put(layer(l)->mlp->down_proj->weight);
  for (int l = 0; l < L; ++l) put(layer(l)->mlp->up_proj->weight);
  put(m->model->norm->weight);
  put(torch::zeros({c.max_position_embeddings * c.dim_head()}));
  if (!c.tie_word_embeddings) put(m->lm_head->weight);
}

TEST(Llama2c, LegacyExportReadsBackToTheSameModel) {
  for (bool tied : {true, false}) {
    TempDir dir;
    auto m = moin::make_llama(small_config(tied), torch::kFloat32, torch::kCPU, 3, 0.2);
    m->config.rms_norm_eps = 1e-5;
    write_llama2c_legacy(m, dir / "m.bin");
    auto back = moin::read_llama2c(dir / "m.bin");
    EXPECT_EQ(back->config.tie_word_embeddings, tied);
    EXPECT_EQ(back->config.max_position_embeddings, 200);
    torch::NoGradGuard g;
    for (auto& [name, t] : m->state_tensors()) {
      auto p = back->named_parameters().find(name);
      ASSERT_NE(p, nullptr) << name;
      EXPECT_TRUE(torch::equal(*p, t)) << name;
    }
  }
}

TEST(Llama2c, RejectsTruncatedAndUnknownFiles) {
  TempDir dir;
  auto m = moin::make_llama(small_config(true), torch::kFloat32, torch::kCPU, 3);
  write_llama2c_legacy(m, dir / "m.bin");
  auto bytes = moin::test::read_file(dir / "m.bin");
  moin::test::write_file(dir / "short.bin", bytes.substr(0, bytes.size() - 4));
  auto msg = user_error_of([&] { moin::read_llama2c(dir / "short.bin"); });
  EXPECT_NE(msg.find("short.bin"), std::string::npos) << msg;
  moin::test::write_file(dir / "long.bin", bytes + "xxxx");
  EXPECT_THROW(moin::read_llama2c(dir / "long.bin"), moin::UserError);
  std::string v2 = bytes;
  const std::uint32_t magic = 0x616b3432u;
  const std::int32_t two = 2;
  v2.replace(0, 4, reinterpret_cast<const char*>(&magic), 4);
  v2.replace(4, 4, reinterpret_cast<const char*>(&two), 4);
  moin::test::write_file(dir / "v2.bin", v2);
  msg = user_error_of([&] { moin::read_llama2c(dir / "v2.bin"); });
  EXPECT_NE(msg.find("version 2"), std::string::npos) << msg;
  moin::test::write_file(dir / "garbage.bin", std::string(1000, '\x7f'));
  EXPECT_THROW(moin::read_llama2c(dir / "garbage.bin"), moin::UserError);
  EXPECT_THROW(moin::read_llama2c(dir / "absent.bin"), moin::UserError);
}

TEST(Generate, KVCacheGivesTheSameTokensAsRecomputing) {
  auto m = moin::make_llama(small_config(false), torch::kFloat32, torch::kCPU, 11, 0.3);
  m->eval();
  moin::GenerateOptions o;
  o.max_new_tokens = 64;
  o.stop_at_eos = false;
  auto cached = moin::generate(m, {1, 7, 9}, o);
  o.use_cache = false;
  auto full = moin::generate(m, {1, 7, 9}, o);
  ASSERT_EQ(cached.size(), 64u);
  EXPECT_EQ(cached, full);
  // Sampling too: the same seed draws the same tokens with and without the cache.
  o.temperature = 0.9;
  o.top_p = 0.9;
  o.seed = 4;
  auto s_full = moin::generate(m, {1}, o);
  o.use_cache = true;
  EXPECT_EQ(moin::generate(m, {1}, o), s_full);
}

TEST(Generate, SamplingIsSeededAndTopPNarrows) {
  auto logits = torch::tensor({1.0f, 3.0f, 2.9f, -1.0f, 0.5f});
  moin::GenerateOptions o;
  std::uint64_t rng = 0;
  EXPECT_EQ(moin::sample_token(logits, o, rng), 1);  // greedy
  o.temperature = 1.0;
  o.top_p = 0.3;  // the nucleus is the single most likely token
  for (int i = 0; i < 20; ++i) EXPECT_EQ(moin::sample_token(logits, o, rng), 1);
  o.top_p = 1.0;
  std::vector<int> counts(5);
  std::uint64_t a = 42, b = 42;
  for (int i = 0; i < 2000; ++i) {
    auto t = moin::sample_token(logits, o, a);
    EXPECT_EQ(t, moin::sample_token(logits, o, b));
    counts[t]++;
  }
  // Frequencies follow softmax(logits): p = [.061 .450 .407 .008 .074].
  auto p = torch::softmax(logits, 0);
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(counts[i] / 2000.0, p[i].item<double>(), 0.035) << i;
}

TEST(Generate, StopsAtEosAndAtTheContextLength) {
  auto c = small_config(true);
  c.max_position_embeddings = 10;
  auto m = moin::make_llama(c, torch::kFloat32, torch::kCPU, 2, 0.3);
  moin::GenerateOptions o;
  o.max_new_tokens = 100;
  o.stop_at_eos = false;
  EXPECT_EQ(moin::generate(m, {1, 2, 3}, o).size(), 7u);
  // Declare the third greedy token the EOS: generation stops right after its first occurrence.
  auto greedy = moin::generate(m, {1, 2, 3}, o);
  m->config.eos_token_id = greedy[2];
  const auto first = std::find(greedy.begin(), greedy.end(), greedy[2]) - greedy.begin();
  o.stop_at_eos = true;
  auto stopped = moin::generate(m, {1, 2, 3}, o);
  EXPECT_EQ(static_cast<std::int64_t>(stopped.size()), first + 1);
  EXPECT_EQ(stopped.back(), greedy[2]);
  EXPECT_THROW(moin::generate(m, {}, o), moin::UserError);
  EXPECT_THROW(moin::generate(m, {50}, o), moin::UserError);
}

// ---- the real model: stories260K (llama2.c) ----

TEST(Stories260K, ConvertedModelReproducesLlama2cGreedyText) {
  MOIN_REQUIRE_SHARED_DATA(data);
  TempDir dir;
  const std::string bin = data + "/models/stories260K/stories260K.bin", tok = data + "/models/stories260K/tok512.model";
  auto r = moin::test::run_moin("convert llama2c --input " + bin + " --output " + (dir / "hf") + " --tokenizer " + tok);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto cfg = LlamaConfig::load(dir / "hf");
  EXPECT_EQ(cfg.hidden_size, 64);
  EXPECT_EQ(cfg.num_key_value_heads, 4);
  EXPECT_TRUE(cfg.tie_word_embeddings);

  // Through the CLI, as a user runs it: only the text on stdout.
  r = moin::test::run_moin("generate --model " + (dir / "hf") + " --prompt '' --max-new-tokens 64 --temperature 0 -q");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.rfind(kStoriesReference, 0), 0u) << r.output;

  // KV cache vs recomputation on the real model, 64 tokens.
  auto m = moin::load_llama(dir / "hf");
  moin::GenerateOptions o;
  o.max_new_tokens = 64;
  o.stop_at_eos = false;
  auto cached = moin::generate(m, {1}, o);
  o.use_cache = false;
  EXPECT_EQ(moin::generate(m, {1}, o), cached);
  auto tokenizer = moin::Tokenizer::load(tok);
  std::vector<int> text(cached.begin(), cached.end());
  EXPECT_EQ(tokenizer.decode(text).rfind(kStoriesReference, 0), 0u) << tokenizer.decode(text);

  // A prompt continues with a space, not glued to the prompt's last word.
  moin::GenerateOptions g;
  g.max_new_tokens = 5;
  auto cont = moin::generate_text(m, tokenizer, "Once upon a time", g);
  EXPECT_EQ(cont.rfind(",", 0), 0u) << cont;  // the reference continues "Once upon a time, there was"
}

TEST(Stories260K, HalfPrecisionStaysOnTheReferenceText) {
  MOIN_REQUIRE_SHARED_DATA(data);
  auto m = moin::read_llama2c(data + "/models/stories260K/stories260K.bin");
  m->to(torch::kBFloat16);
  auto tokenizer = moin::Tokenizer::load(data + "/models/stories260K/tok512.model");
  moin::GenerateOptions o;
  o.max_new_tokens = 12;
  auto text = moin::generate_text(m, tokenizer, "", o);
  EXPECT_EQ(text.rfind("Once upon a time", 0), 0u) << text;
}

}  // namespace
