// The BERT encoder, sentence encoder and encoder embedder on a tiny random model written here: the
// forward pass against a naive re-implementation, padding invariance, shape errors that name the file and
// tensor, the "bert." prefix, and the embedder's save/load with its fingerprint. (Against the real
// all-MiniLM-L6-v2 and sentence-transformers: tests/python/test_wordpiece_ref.py.)
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moin/core/error.h"
#include "moin/model/bert.h"
#include "moin/model/safetensors_torch.h"
#include "moin/model/sentence_encoder.h"
#include "moin/partition/embedder.h"
#include "moin/partition/encoder_embedder.h"
#include "test_util.h"

namespace moin {
namespace {

constexpr int H = 8, NH = 2, I = 16, V = 12, P = 16, L = 2;

std::vector<std::pair<std::string, torch::Tensor>> random_weights(const std::string& prefix) {
  torch::manual_seed(7);
  std::vector<std::pair<std::string, torch::Tensor>> w;
  auto add = [&](const std::string& n, std::vector<std::int64_t> shape, double scale = 0.5) {
    w.emplace_back(prefix + n, torch::randn(shape) * scale);
  };
  add("embeddings.word_embeddings.weight", {V, H});
  add("embeddings.position_embeddings.weight", {P, H});
  add("embeddings.token_type_embeddings.weight", {2, H});
  add("embeddings.LayerNorm.weight", {H});
  add("embeddings.LayerNorm.bias", {H});
  for (int l = 0; l < L; ++l) {
    std::string p = "encoder.layer." + std::to_string(l) + ".";
    for (const char* m : {"query", "key", "value"}) {
      add(p + "attention.self." + m + ".weight", {H, H});
      add(p + "attention.self." + m + ".bias", {H});
    }
    add(p + "attention.output.dense.weight", {H, H});
    add(p + "attention.output.dense.bias", {H});
    add(p + "attention.output.LayerNorm.weight", {H});
    add(p + "attention.output.LayerNorm.bias", {H});
    add(p + "intermediate.dense.weight", {I, H});
    add(p + "intermediate.dense.bias", {I});
    add(p + "output.dense.weight", {H, I});
    add(p + "output.dense.bias", {H});
    add(p + "output.LayerNorm.weight", {H});
    add(p + "output.LayerNorm.bias", {H});
  }
  return w;
}

void write_model(const std::string& dir, const std::string& prefix = "") {
  test::write_file(dir + "/config.json",
                   R"({"vocab_size": 12, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "intermediate_size": 16, "max_position_embeddings": 16, "type_vocab_size": 2,
                       "layer_norm_eps": 1e-12, "hidden_act": "gelu"})");
  test::write_file(dir + "/vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\ncat\nsat\non\nmat\n##s\n.\na\n");
  st::save(dir + "/model.safetensors", random_weights(prefix));
}

// A naive forward pass of one unpadded sequence: explicit loops over heads, softmax by hand.
torch::Tensor naive_forward(const std::map<std::string, torch::Tensor>& w, const std::vector<int>& ids) {
  auto g = [&](const std::string& n) { return w.at(n); };
  auto ln = [](torch::Tensor x, torch::Tensor gmm, torch::Tensor b) {
    auto mu = x.mean(-1, true);
    auto var = (x - mu).pow(2).mean(-1, true);
    return (x - mu) / torch::sqrt(var + 1e-12) * gmm + b;
  };
  const int T = static_cast<int>(ids.size());
  auto x = torch::zeros({T, H});
  for (int t = 0; t < T; ++t)
    x[t] = g("embeddings.word_embeddings.weight")[ids[t]] + g("embeddings.position_embeddings.weight")[t] +
           g("embeddings.token_type_embeddings.weight")[0];
  x = ln(x, g("embeddings.LayerNorm.weight"), g("embeddings.LayerNorm.bias"));
  for (int l = 0; l < L; ++l) {
    std::string p = "encoder.layer." + std::to_string(l) + ".";
    auto lin = [&](torch::Tensor in, const std::string& n) {
      return torch::matmul(in, g(p + n + ".weight").t()) + g(p + n + ".bias");
    };
    auto q = lin(x, "attention.self.query"), k = lin(x, "attention.self.key"), v = lin(x, "attention.self.value");
    auto a = torch::zeros({T, H});
    const int hd = H / NH;
    for (int h = 0; h < NH; ++h) {
      auto qh = q.slice(1, h * hd, (h + 1) * hd), kh = k.slice(1, h * hd, (h + 1) * hd), vh = v.slice(1, h * hd, (h + 1) * hd);
      auto s = torch::matmul(qh, kh.t()) / std::sqrt(double(hd));
      auto e = torch::exp(s - std::get<0>(s.max(1, true)));
      a.slice(1, h * hd, (h + 1) * hd).copy_(torch::matmul(e / e.sum(1, true), vh));
    }
    x = ln(x + lin(a, "attention.output.dense"), g(p + "attention.output.LayerNorm.weight"),
           g(p + "attention.output.LayerNorm.bias"));
    auto f = lin(x, "intermediate.dense");
    f = 0.5 * f * (1 + torch::erf(f / std::sqrt(2.0)));
    x = ln(x + lin(f, "output.dense"), g(p + "output.LayerNorm.weight"), g(p + "output.LayerNorm.bias"));
  }
  return x;
}

TEST(Bert, ForwardMatchesNaiveImplementationAndIgnoresPadding) {
  test::TempDir dir;
  write_model(dir.path.string(), "bert.");  // the prefix is accepted
  auto m = BertModel::load(dir.path.string());
  std::map<std::string, torch::Tensor> w;
  for (auto& [n, t] : random_weights("")) w[n] = t;
  std::vector<int> a = {2, 4, 5, 6, 3}, b = {2, 11, 8, 9, 10, 4, 7, 3};
  // Batch of both, `a` padded with [PAD] and mask 0.
  auto ids = torch::zeros({2, 8}, torch::kLong), mask = torch::zeros({2, 8}, torch::kLong);
  for (std::size_t t = 0; t < a.size(); ++t) ids[0][t] = a[t], mask[0][t] = 1;
  for (std::size_t t = 0; t < b.size(); ++t) ids[1][t] = b[t], mask[1][t] = 1;
  auto h = m.forward(ids, mask);
  ASSERT_EQ(h.sizes(), (std::vector<std::int64_t>{2, 8, H}));
  EXPECT_TRUE(torch::allclose(h[0].slice(0, 0, 5), naive_forward(w, a), 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(h[1], naive_forward(w, b), 1e-4, 1e-5));
}

TEST(Bert, ShapeErrorsNameTheFileAndTensor) {
  test::TempDir dir;
  write_model(dir.path.string());
  auto w = random_weights("");
  for (auto& [n, t] : w)
    if (n == "encoder.layer.1.intermediate.dense.weight") t = torch::zeros({I + 1, H});
  st::save(dir / "model.safetensors", w);
  try {
    BertModel::load(dir.path.string());
    FAIL() << "expected a UserError";
  } catch (const UserError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("encoder.layer.1.intermediate.dense.weight"), std::string::npos) << msg;
  }
  std::filesystem::remove(dir / "model.safetensors");
  test::write_file(dir / "pytorch_model.bin", "not read");
  try {
    BertModel::load(dir.path.string());
    FAIL() << "expected a UserError";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("pytorch_model.bin"), std::string::npos) << e.what();
  }
}

TEST(SentenceEncoder, MeanPoolsNormalisesAndBatchesInAnyOrder) {
  test::TempDir dir;
  write_model(dir.path.string());
  SentenceEncoderOptions o;
  o.batch_size = 2;
  o.device = "cpu";
  auto enc = SentenceEncoder::load(dir.path.string(), o);
  EXPECT_EQ(enc.max_length(), 16);
  std::vector<std::string> texts = {"the cat sat on the mat.", "a cat", "mats", "the the the the the the the the"};
  auto e = enc.encode(texts);
  ASSERT_EQ(e.sizes(), (std::vector<std::int64_t>{4, H}));
  EXPECT_TRUE(torch::allclose(e.norm(2, 1), torch::ones({4}), 1e-5, 1e-5));
  // Each row equals the text encoded alone (no padding), mean-pooled by hand.
  for (int i = 0; i < 4; ++i) {
    auto ids = enc.tokenize({texts[i]})[0];
    auto t = torch::tensor(std::vector<std::int64_t>(ids.begin(), ids.end())).unsqueeze(0);
    auto pooled = enc.bert().forward(t, torch::ones_like(t)).mean(1)[0];
    EXPECT_TRUE(torch::allclose(e[i], pooled / pooled.norm(), 1e-4, 1e-5)) << i;
  }
  // 16 positions: a long text is cut to [CLS] + 14 + [SEP].
  EXPECT_EQ(enc.tokenize({std::string(200, 'a') + " the the the the the the the the the the the the the the the"})[0].size(), 16u);
}

TEST(EncoderEmbedder, SavesLoadsAndRefusesAChangedModel) {
  test::TempDir model, part;
  write_model(model.path.string());
  EmbedderOptions o;
  o.type = "encoder";
  o.encoder_dir = model.path.string();
  o.max_length = 8;
  auto e = make_embedder(o);
  EXPECT_EQ(e->type(), "encoder");
  EXPECT_EQ(e->dim(), H);
  std::vector<std::string> texts = {"the cat", "sat on a mat"};
  auto v = e->embed(texts);
  e->save(part.path.string());
  auto e2 = load_embedder(part.path.string());
  EXPECT_EQ(e2->embed(texts), v);
  // The model folder changed under the partition: refuse rather than embed differently.
  write_model(model.path.string(), "bert.");
  EXPECT_THROW(load_embedder(part.path.string()), UserError);
  o.encoder_dir = model / "absent";
  EXPECT_THROW(make_embedder(o), UserError);
}

}  // namespace
}  // namespace moin
