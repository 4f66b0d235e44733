// The "model" embedder: save/load identity, batching invariance (padding must not leak), refusal of a
// changed model, a partition routed back to its own assignments, and (with the shared data) the real
// stories260K model on real documents. The numerical reference (transformers) is
// tests/python/test_model_embedder_ref.py.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "moin/data/corpus.h"
#include "moin/data/tokenizer.h"
#include "moin/data/tokenizer_corpus.h"
#include "moin/model/checkpoint.h"
#include "moin/model/llama2c.h"
#include "moin/partition/embedder.h"
#include "moin/partition/model_embedder.h"
#include "moin/partition/partition.h"
#include "moin/route/router.h"
#include "test_util.h"

namespace {

namespace stdfs = std::filesystem;
using json = nlohmann::json;
using moin::test::TempDir;

// Three topics, documents of 3..60 words (so one batch mixes very different lengths).
std::vector<std::string> docs(int n, unsigned seed = 7) {
  const std::vector<std::vector<std::string>> topics = {
      {"rocket", "orbit", "planet", "astronaut", "launch", "moon", "satellite", "telescope"},
      {"flour", "oven", "recipe", "butter", "sugar", "bake", "dough", "kitchen"},
      {"goal", "match", "team", "striker", "league", "referee", "season", "coach"}};
  const std::vector<std::string> filler = {"really", "quite", "today", "people", "think", "good"};
  std::mt19937 rng(seed);
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    int len = 3 + static_cast<int>(rng() % 58);
    std::string s;
    for (int w = 0; w < len; ++w) {
      const auto& pool = rng() % 3 == 0 ? filler : topics[i % 3];
      s += (w ? " " : "") + pool[rng() % pool.size()];
    }
    out.push_back(s);
  }
  return out;
}

moin::LlamaConfig tiny_config() {
  moin::LlamaConfig c;
  c.vocab_size = 300;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 128;
  c.tie_word_embeddings = true;
  return c;
}

// A random tiny Llama (seeded) and a SentencePiece model trained on the documents.
struct Fixture {
  TempDir dir;
  std::string model, tokenizer, corpus;
  std::vector<std::string> texts = docs(90);
  Fixture() {
    corpus = dir / "corpus.jsonl";
    {
      std::ofstream out(corpus);
      for (std::size_t i = 0; i < texts.size(); ++i)
        out << json{{"text", texts[i]}, {"meta", {{"topic", std::to_string(i % 3)}}}}.dump() << "\n";
    }
    moin::TokenizerTrainOptions t;
    t.input = {corpus};
    t.model_prefix = dir / "tok";
    t.vocab_size = 60;
    t.byte_fallback = false;  // 256 byte pieces would not fit this tiny vocabulary
    moin::train_tokenizer_on_corpus(t, moin::CorpusOptions{});
    tokenizer = dir / "tok.model";
    model = dir / "model";
    write_model(1);
  }
  void write_model(std::uint64_t seed) {
    auto m = moin::make_llama(tiny_config(), torch::kFloat32, torch::kCPU, seed, 0.2);
    moin::save_llama(m, model);
  }
  moin::EmbedderOptions options(int layer = -1, bool center = true, int batch = 7) const {
    moin::EmbedderOptions o;
    o.type = "model";
    o.model_dir = model;
    o.tokenizer = tokenizer;
    o.layer = layer;
    o.center = center;
    o.batch_size = batch;
    o.max_length = 40;  // shorter than the longest documents: cutting is exercised too
    o.device = "cpu";
    return o;
  }
};

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

TEST(ModelEmbedder, RowsAreUnitAndCenteredDiffersFromRaw) {
  Fixture f;
  auto e = moin::make_embedder(f.options());
  EXPECT_EQ(e->type(), "model");
  EXPECT_EQ(e->dim(), 32);
  EXPECT_THROW(e->embed(f.texts), moin::UserError) << "centred: embed() before fit() must be refused";
  std::vector<float> x = e->fit_embed(f.texts);
  ASSERT_EQ(x.size(), f.texts.size() * 32);
  std::vector<double> mean(32, 0.0);
  for (std::size_t r = 0; r < f.texts.size(); ++r) {
    double n = 0;
    for (int c = 0; c < 32; ++c) n += double(x[r * 32 + c]) * x[r * 32 + c];
    EXPECT_NEAR(n, 1.0, 1e-5);
  }
  EXPECT_EQ(max_abs_diff(e->embed(f.texts), x), 0.0) << "fit_embed == fit + embed";
  auto raw = moin::make_embedder(f.options(-1, /*center=*/false))->embed(f.texts);
  EXPECT_GT(max_abs_diff(raw, x), 1e-2);
}

TEST(ModelEmbedder, SaveLoadRoundTripGivesIdenticalEmbeddings) {
  Fixture f;
  for (bool center : {true, false}) {
    auto e = moin::make_embedder(f.options(1, center));
    e->fit(f.texts);
    std::vector<float> a = e->embed(f.texts);
    std::string d = f.dir / (center ? "emb-c" : "emb-r");
    e->save(d);
    auto meta = moin::fs::read_json(stdfs::path(d) / "embedder.json");
    EXPECT_EQ(meta["type"], "model");
    EXPECT_EQ(meta["layer"], 1);
    EXPECT_EQ(meta["hidden_index"], 1);
    EXPECT_EQ(meta["max_length"], 40);
    EXPECT_EQ(meta["weights_sha256"].get<std::string>().size(), 64u);
    EXPECT_TRUE(stdfs::path(meta["model_dir"].get<std::string>()).is_absolute());
    EXPECT_EQ(stdfs::exists(stdfs::path(d) / "model_mean.npy"), center);
    auto back = moin::load_embedder(d);
    EXPECT_EQ(back->type(), "model");
    EXPECT_EQ(max_abs_diff(back->embed(f.texts), a), 0.0) << "center=" << center;
  }
}

TEST(ModelEmbedder, BatchSizeDoesNotChangeTheVectors) {
  Fixture f;
  for (int layer : {0, 2, -1}) {
    auto one = moin::make_embedder(f.options(layer, false, 1))->embed(f.texts);
    auto seven = moin::make_embedder(f.options(layer, false, 7))->embed(f.texts);
    auto all = moin::make_embedder(f.options(layer, false, 200))->embed(f.texts);
    EXPECT_LT(max_abs_diff(one, seven), 2e-6) << "layer " << layer;
    EXPECT_LT(max_abs_diff(one, all), 2e-6) << "layer " << layer;
  }
  // Order of the texts does not matter either (each row is its own document's).
  auto e = moin::make_embedder(f.options(-1, false, 7));
  std::vector<std::string> rev(f.texts.rbegin(), f.texts.rend());
  auto a = e->embed(f.texts), b = e->embed(rev);
  const std::size_t n = f.texts.size();
  for (std::size_t r = 0; r < n; ++r)
    for (int c = 0; c < 32; ++c) ASSERT_NEAR(a[r * 32 + c], b[(n - 1 - r) * 32 + c], 2e-6);
}

TEST(ModelEmbedder, LayersDifferAndOutOfRangeIsAUserError) {
  Fixture f;
  auto l0 = moin::make_embedder(f.options(0, false))->embed(f.texts);
  auto l3 = moin::make_embedder(f.options(3, false))->embed(f.texts);
  auto last = moin::make_embedder(f.options(-1, false))->embed(f.texts);
  EXPECT_GT(max_abs_diff(l0, last), 1e-2);
  EXPECT_EQ(max_abs_diff(l3, last), 0.0) << "-1 is hidden_states[num_hidden_layers]";
  EXPECT_THROW(moin::make_embedder(f.options(4)), moin::UserError);
  EXPECT_THROW(moin::make_embedder(f.options(-5)), moin::UserError);
  EXPECT_NO_THROW(moin::make_embedder(f.options(-4)));
  auto o = f.options();
  o.model_dir = f.dir / "nowhere";
  EXPECT_THROW(moin::make_embedder(o), moin::UserError);
  o = f.options();
  o.tokenizer = f.dir / "none.model";
  EXPECT_THROW(moin::make_embedder(o), moin::UserError);
}

TEST(ModelEmbedder, AChangedModelOrTokenizerIsRefusedOnLoad) {
  Fixture f;
  auto e = moin::make_embedder(f.options());
  e->fit(f.texts);
  std::string d = f.dir / "emb";
  e->save(d);
  EXPECT_NO_THROW(moin::load_embedder(d));
  f.write_model(2);  // same architecture, other weights: only the content hash tells
  {
    std::string msg = moin::test::user_error_of([&] { moin::load_embedder(d); });
    EXPECT_NE(msg.find("changed"), std::string::npos) << msg;
  }
  f.write_model(1);
  EXPECT_NO_THROW(moin::load_embedder(d));
  moin::test::write_file(f.tokenizer, moin::test::read_file(f.tokenizer) + "x");
  EXPECT_THROW(moin::load_embedder(d), moin::UserError);
}

TEST(ModelEmbedder, PartitionRoutesEachTrainingDocumentToItsAssignment) {
  Fixture f;
  moin::PartitionOptions o;
  o.corpus.inputs = {f.corpus};
  o.corpus.label_field = "meta.topic";
  o.tokenizer = f.tokenizer;  // also the embedder's (embedder.tokenizer left empty)
  o.output = f.dir / "part";
  o.kmeans.k = 3;
  o.kmeans.nredo = 2;
  o.embedder = f.options();
  o.embedder.tokenizer.clear();
  o.valid_fraction = 0.1;
  o.batch_docs = 16;  // assign embeds in other batches than the router
  o.threads = 2;
  auto s = moin::run_partition(o);
  EXPECT_EQ(s.documents, 90);
  auto meta = moin::fs::read_json(stdfs::path(o.output) / "embedder" / "embedder.json");
  EXPECT_EQ(meta["tokenizer"], stdfs::absolute(f.tokenizer).lexically_normal().string());

  std::vector<int> assigned;
  {
    std::ifstream in(o.output + "/assignments.jsonl");
    std::string line;
    while (std::getline(in, line)) assigned.push_back(json::parse(line)["cluster"].get<int>());
  }
  ASSERT_EQ(assigned.size(), f.texts.size());
  auto router = moin::Router::load(o.output);
  EXPECT_EQ(router.embedder().type(), "model");
  auto routes = router.route(f.texts, 1, 32);
  std::set<int> used;
  for (std::size_t i = 0; i < f.texts.size(); ++i) {
    EXPECT_EQ(routes[i].expert(), assigned[i]) << "document " << i;
    used.insert(assigned[i]);
  }
  EXPECT_GT(used.size(), 1u) << "a partition whose documents all went to one cluster proves little";
}

// The real model: stories260K (llama2.c, TinyStories) converted to the HF layout, on real documents.
TEST(ModelEmbedder, Stories260KOnRealDocuments) {
  MOIN_REQUIRE_SHARED_DATA(data);
  TempDir dir;
  moin::Llama2cConvertOptions c;
  c.input = data + "/models/stories260K/stories260K.bin";
  c.output = dir / "stories260K";
  c.tokenizer = data + "/models/stories260K/tok512.model";
  moin::convert_llama2c(c);

  std::vector<std::string> texts;
  {
    std::ifstream in(data + "/corpus/valid.jsonl");
    std::string line;
    while (texts.size() < 120 && std::getline(in, line)) texts.push_back(json::parse(line)["text"].get<std::string>());
  }
  ASSERT_EQ(texts.size(), 120u);
  moin::EmbedderOptions o;
  o.type = "model";
  o.model_dir = c.output;  // tokenizer: the folder's tokenizer.model
  o.max_length = 256;
  o.batch_size = 16;
  o.device = "cpu";
  for (int layer : {3, -1}) {
    o.layer = layer;
    auto e = moin::make_embedder(o);
    EXPECT_EQ(e->dim(), 64);
    auto x = e->fit_embed(texts);
    double mean_cos = 0;
    for (std::size_t r = 0; r < texts.size(); ++r) {
      double n = 0;
      for (int k = 0; k < 64; ++k) {
        ASSERT_TRUE(std::isfinite(x[r * 64 + k]));
        n += double(x[r * 64 + k]) * x[r * 64 + k];
      }
      EXPECT_NEAR(n, 1.0, 1e-5);
      if (r) {
        double ip = 0;
        for (int k = 0; k < 64; ++k) ip += double(x[r * 64 + k]) * x[(r - 1) * 64 + k];
        mean_cos += ip / (texts.size() - 1);
      }
    }
    // Centred: neighbouring documents are far from parallel (raw states would all share one direction).
    EXPECT_LT(mean_cos, 0.5) << "layer " << layer;
    std::string d = dir / ("emb" + std::to_string(layer));
    e->save(d);
    EXPECT_LT(max_abs_diff(moin::load_embedder(d)->embed(texts), x), 1e-6);
  }
}

}  // namespace
