// The TF-IDF embedder: tokeniser, unit rows, topic separation, save/load identity, and (with the shared
// data) cluster quality on the real corpus.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "moin/core/error.h"
#include "moin/core/npy.h"
#include "moin/core/cluster_metrics.h"
#include "moin/partition/embedder.h"
#include "moin/partition/kmeans.h"
#include "partition/tfidf_embedder.h"
#include "test_util.h"

using namespace moin;

namespace {

// Two synthetic topics with a shared background vocabulary.
std::vector<std::string> corpus(int per_topic, std::vector<int>* topic = nullptr) {
  const std::vector<std::string> a = {"planet", "orbit", "rocket", "launch", "moon", "star", "galaxy", "telescope"};
  const std::vector<std::string> b = {"recipe", "flour", "oven", "butter", "sugar", "bake", "dough", "cake"};
  const std::vector<std::string> common = {"people", "year", "time", "work", "world", "thing", "place", "day"};
  std::mt19937 rng(3);
  std::vector<std::string> docs;
  for (int i = 0; i < 2 * per_topic; ++i) {
    const auto& v = i % 2 ? b : a;
    std::string s;
    for (int w = 0; w < 30; ++w) s += (rng() % 3 ? v[rng() % v.size()] : common[rng() % common.size()]) + " ";
    s += "in " + std::to_string(1900 + i) + ".";
    docs.push_back(s);
    if (topic) topic->push_back(i % 2);
  }
  return docs;
}

double dot(const float* a, const float* b, int d) {
  double s = 0;
  for (int j = 0; j < d; ++j) s += double(a[j]) * b[j];
  return s;
}

}  // namespace

TEST(Tfidf, Words) {
  std::string storage;
  auto w = tfidf::words("The QUICK brown fox, jumped over 42 lazy dogs in 1999x! a é_b", true, 0, storage);
  std::vector<std::string> got(w.begin(), w.end());
  EXPECT_EQ(got, (std::vector<std::string>{"quick", "brown", "fox", "jumped", "0num", "lazy", "dogs", "0num", "é_b"}));
  w = tfidf::words("The cat", false, 0, storage);
  EXPECT_EQ(std::vector<std::string>(w.begin(), w.end()), (std::vector<std::string>{"the", "cat"}));
  w = tfidf::words("alpha beta gamma", true, 10, storage);  // only "alpha beta" is read
  EXPECT_EQ(std::vector<std::string>(w.begin(), w.end()), (std::vector<std::string>{"alpha", "beta"}));
}

TEST(Tfidf, UnitRowsThatSeparateTopics) {
  std::vector<int> topic;
  auto docs = corpus(60, &topic);
  EmbedderOptions o;
  o.dim = 8;
  o.min_df = 1;
  o.max_features = 5000;
  auto e = make_embedder(o);
  EXPECT_EQ(e->type(), "tfidf");
  EXPECT_THROW(e->embed(docs), UserError);  // not fitted
  e->fit(docs);
  auto x = e->embed(docs);
  ASSERT_EQ(x.size(), docs.size() * 8);
  double within = 0, across = 0;
  int nw = 0, na = 0;
  for (std::size_t i = 0; i < docs.size(); ++i) {
    EXPECT_NEAR(dot(&x[i * 8], &x[i * 8], 8), 1.0, 1e-4);
    for (std::size_t j = i + 1; j < docs.size(); ++j) {
      double s = dot(&x[i * 8], &x[j * 8], 8);
      if (topic[i] == topic[j]) within += s, ++nw;
      else across += s, ++na;
    }
  }
  EXPECT_GT(within / nw, across / na + 0.5);
  // A document with no known word embeds to zeros (no direction), not NaN.
  auto z = e->embed({"", "zzzzqqq"});
  for (float v : z) EXPECT_EQ(v, 0.0f);
}

TEST(Tfidf, SaveLoadGivesIdenticalEmbeddings) {
  moin::test::TempDir dir;
  auto docs = corpus(50);
  EmbedderOptions o;
  o.dim = 6;
  o.min_df = 1;
  o.fit_sample = 70;  // a sample of the 100 documents
  auto e = make_embedder(o);
  e->fit(docs);
  e->save(dir.path.string());
  auto back = load_embedder(dir.path.string());
  EXPECT_EQ(back->type(), "tfidf");
  EXPECT_EQ(back->dim(), 6);
  std::vector<std::string> probe = docs;
  probe.push_back("rocket flour and 12 unseen words");
  EXPECT_EQ(e->embed(probe), back->embed(probe));  // bit for bit
  // The state is plain .npy, readable without moin.
  auto p = npy::load_f32(dir / "tfidf_projection.npy");
  ASSERT_EQ(p.shape.size(), 2u);
  EXPECT_EQ(p.shape[1], 6);
  // Fitting is deterministic for a seed.
  auto e2 = make_embedder(o);
  e2->fit(docs);
  EXPECT_EQ(e->embed(probe), e2->embed(probe));
}

TEST(Tfidf, BadStateAndTypesAreUserErrors) {
  moin::test::TempDir dir;
  EXPECT_THROW(load_embedder(dir.path.string()), UserError);  // no embedder.json
  moin::test::write_file(dir / "embedder.json", R"({"type": "nope"})");
  EXPECT_THROW(load_embedder(dir.path.string()), UserError);
  EmbedderOptions o;
  o.type = "model";
  EXPECT_THROW(make_embedder(o), UserError);
  o.type = "word2vec";
  EXPECT_THROW(make_embedder(o), UserError);
  // Truncated state file.
  auto docs = corpus(20);
  EmbedderOptions t;
  t.dim = 4;
  t.min_df = 1;
  auto e = make_embedder(t);
  e->fit(docs);
  e->save(dir.path.string());
  auto text = moin::test::read_file(dir / "tfidf_projection.npy");
  moin::test::write_file(dir / "tfidf_projection.npy", text.substr(0, text.size() - 7));
  EXPECT_THROW(load_embedder(dir.path.string()), UserError);
  // Too few features for the dimension.
  t.dim = 500;
  t.max_features = 1000;
  EXPECT_THROW(make_embedder(t)->fit(docs), UserError);
}

// The real corpus (every 6th document, ~6,200, to stay quick; the file is grouped by source): clusters
// must follow the sources.
TEST(Tfidf, ClustersTheRealCorpusBySource) {
  MOIN_REQUIRE_SHARED_DATA(data);
  std::ifstream in(data + "/corpus/train.jsonl");
  std::vector<std::string> text, label;
  std::string line;
  for (int i = 0; std::getline(in, line); ++i) {
    if (i % 6) continue;
    auto j = nlohmann::json::parse(line);
    text.push_back(j["text"].get<std::string>());
    label.push_back(j["meta"]["pile_set_name"].get<std::string>());
  }
  EmbedderOptions o;
  auto e = make_embedder(o);
  e->fit(text);
  auto x = e->embed(text);
  KMeansOptions ko;
  ko.k = 10;
  auto km = train_kmeans(x.data(), std::int64_t(text.size()), e->dim(), ko);
  auto a = assign(x.data(), std::int64_t(text.size()), km);
  double score = nmi(encode_labels(label), a.cluster);
  std::printf("NMI on %zu train documents: %.3f\n", text.size(), score);
  EXPECT_GT(score, 0.40);
}
