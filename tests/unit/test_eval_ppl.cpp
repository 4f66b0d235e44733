#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <set>

#include "moin/data/tokenizer.h"
#include "moin/eval/perplexity.h"
#include "test_util.h"

namespace {

using moin::test::TempDir;

// A reference "model": the NLL of token x under adapter a is cost(a, x); it records what it is asked.
struct TableScorer : moin::Scorer {
  int adapters;
  std::vector<int> rows_per_adapter_calls;  // every adapter named, once per row
  std::vector<std::size_t> batch_sizes;
  std::vector<int> seen_from;
  explicit TableScorer(int n) : adapters(n) {}
  static double cost(int a, int x) { return 1.0 + 0.25 * std::abs((a + 1) - x % 7); }
  std::vector<double> nll(const std::vector<std::vector<int>>& seqs, const std::vector<int>& from,
                          const std::vector<int>& adapter) override {
    std::vector<double> out;
    batch_sizes.push_back(seqs.size());
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      EXPECT_GE(adapter[i], -1);
      EXPECT_LT(adapter[i], adapters);
      rows_per_adapter_calls.push_back(adapter[i]);
      seen_from.push_back(from[i]);
      double s = 0;
      for (std::size_t t = static_cast<std::size_t>(from[i]); t < seqs[i].size(); ++t) s += cost(adapter[i], seqs[i][t]);
      out.push_back(s);
    }
    return out;
  }
  std::vector<std::vector<float>> token_logprobs(const std::vector<std::vector<int>>& seqs, const std::vector<int>& from,
                                                 const std::vector<int>& adapter) override {
    std::vector<std::vector<float>> out(seqs.size());
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      rows_per_adapter_calls.push_back(adapter[i]);
      for (std::size_t t = static_cast<std::size_t>(from[i]); t < seqs[i].size(); ++t)
        out[i].push_back(static_cast<float>(-cost(adapter[i], seqs[i][t])));
    }
    return out;
  }
  int num_adapters() const override { return adapters; }
};

std::vector<moin::EvalDoc> random_docs(int n, int K, int P, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<moin::EvalDoc> docs(n);
  for (int i = 0; i < n; ++i) {
    auto& d = docs[i];
    d.tokens.push_back(1);
    int len = 1 + P + 3 + static_cast<int>(rng() % 20);
    while (static_cast<int>(d.tokens.size()) < len) d.tokens.push_back(4 + static_cast<int>(rng() % 50));
    d.from = 1 + P;
    d.routed = static_cast<int>(rng() % K);
    d.label = (i % 3 == 0) ? "a" : "b";
  }
  return docs;
}

double doc_nll(const moin::EvalDoc& d, int a) {
  double s = 0;
  for (std::size_t t = static_cast<std::size_t>(d.from); t < d.tokens.size(); ++t) s += TableScorer::cost(a, d.tokens[t]);
  return s;
}

TEST(EvalPpl, EverySystemMatchesABruteForceReference) {
  const int K = 4, P = 5;
  auto docs = random_docs(41, K, P, 3);
  TableScorer base(K + 1), cpt(0);
  moin::PplOptions opts;
  opts.prefix_tokens = P;
  opts.batch_size = 3;
  opts.oracle = true;
  auto r = moin::evaluate_perplexity(docs, base, K, /*dense_adapter=*/K, &cpt, opts);

  // Independent sums, system by system.
  double b = 0, dense = 0, moin_nll = 0, rnd = 0, orc = 0;
  std::int64_t tokens = 0;
  for (const auto& d : docs) {
    tokens += static_cast<std::int64_t>(d.tokens.size()) - d.from;
    b += doc_nll(d, -1);
    dense += doc_nll(d, K);
    moin_nll += doc_nll(d, d.routed);
    ASSERT_GE(d.random, 0);
    ASSERT_LT(d.random, K);
    rnd += doc_nll(d, d.random);
    double best = 1e300;
    int best_e = -1;
    for (int e = 0; e < K; ++e)
      if (doc_nll(d, e) < best) best = doc_nll(d, e), best_e = e;
    orc += best;
    EXPECT_EQ(d.oracle, best_e);
  }
  auto ppl = [&](double nll) { return std::exp(nll / static_cast<double>(tokens)); };
  ASSERT_EQ(r.systems.size(), 6u);
  EXPECT_NEAR(r.find("base")->overall.ppl(), ppl(b), 1e-9);
  EXPECT_NEAR(r.find("continued pre-training")->overall.ppl(), ppl(b), 1e-9);  // cpt scorer has adapter -1
  EXPECT_NEAR(r.find("dense LoRA")->overall.ppl(), ppl(dense), 1e-9);
  EXPECT_NEAR(r.find("MoIN (routed)")->overall.ppl(), ppl(moin_nll), 1e-9);
  EXPECT_NEAR(r.find("random expert")->overall.ppl(), ppl(rnd), 1e-9);
  EXPECT_NEAR(r.find("oracle expert")->overall.ppl(), ppl(orc), 1e-9);
  EXPECT_EQ(r.find("base")->overall.tokens, tokens);
  EXPECT_LE(r.find("oracle expert")->overall.ppl(), r.find("MoIN (routed)")->overall.ppl());

  // Per label and per cluster cells add up to the whole.
  std::int64_t label_tokens = 0;
  for (const auto& [k, c] : r.find("base")->per_label) label_tokens += c.tokens;
  EXPECT_EQ(label_tokens, tokens);
  double cluster_nll = 0;
  for (const auto& [k, c] : r.find("MoIN (routed)")->per_cluster) cluster_nll += c.nll;
  EXPECT_NEAR(cluster_nll, moin_nll, 1e-6);

  // Only the tokens after the prefix are scored; each (document, adapter) pair once (the oracle scores every
  // expert on every document, which covers routed and random); batches are full whatever their adapters.
  for (int f : base.seen_from) EXPECT_EQ(f, 1 + P);
  std::multiset<int> calls(base.rows_per_adapter_calls.begin(), base.rows_per_adapter_calls.end());
  for (int e = -1; e <= K; ++e) EXPECT_EQ(calls.count(e), docs.size()) << "adapter " << e;
  for (std::size_t i = 0; i + 1 < base.batch_sizes.size(); ++i) EXPECT_EQ(base.batch_sizes[i], 3u);

  auto j = r.to_json();
  EXPECT_EQ(j["systems"].size(), 6u);
  auto md = r.markdown();
  EXPECT_NE(md.find("| MoIN (routed) |"), std::string::npos);
  EXPECT_NE(md.find("Perplexity per label"), std::string::npos);
}

// c-BTM against a brute-force mixture of next-token distributions; T = 0 is MoIN (the routed expert)
// exactly, and T -> 0 converges to it; an expert without an adapter is the base model.
TEST(EvalPpl, CbtmMixesTheNearestExpertsAndItsZeroTemperatureIsMoIN) {
  const int K = 5, P = 3;
  auto docs = random_docs(23, K, P, 17);
  std::mt19937 rng(5);
  for (auto& d : docs) {
    d.nearest = {d.routed};
    d.nearest_d2 = {0.2f + 0.01f * static_cast<float>(rng() % 50)};
    while (d.nearest.size() < 3) {
      const int e = static_cast<int>(rng() % K);
      if (std::find(d.nearest.begin(), d.nearest.end(), e) != d.nearest.end()) continue;
      d.nearest.push_back(e);
      d.nearest_d2.push_back(d.nearest_d2.back() + 0.01f * static_cast<float>(rng() % 30));
    }
  }
  std::vector<std::string> status(K, "ok");
  status[3] = "too_small";
  auto adapter_of = [&](int e) { return status[static_cast<std::size_t>(e)] == "ok" ? e : -1; };
  moin::PplOptions opts;
  opts.prefix_tokens = P;
  opts.random = false;
  opts.cbtm = true;
  opts.cbtm_top_k = 3;
  auto run = [&](double T) {
    opts.cbtm_temperature = T;
    TableScorer base(K);
    auto copy = docs;
    return moin::evaluate_perplexity(copy, base, K, -1, nullptr, opts, status);
  };
  auto r0 = run(0.0);
  const auto* moin0 = r0.find("MoIN (routed)");
  const auto* cbtm0 = &r0.systems.back();
  ASSERT_EQ(cbtm0->key, "cbtm");
  EXPECT_EQ(cbtm0->overall.nll, moin0->overall.nll);  // exactly: the same scores
  EXPECT_EQ(cbtm0->overall.tokens, moin0->overall.tokens);
  EXPECT_NEAR(run(1e-4).systems.back().overall.nll, moin0->overall.nll, 1e-9 * moin0->overall.nll);

  const double T = 0.05;
  auto r = run(T);
  double want = 0;
  for (const auto& d : docs) {
    std::vector<double> w;
    for (std::size_t j = 0; j < 3; ++j) w.push_back(std::exp(-static_cast<double>(d.nearest_d2[j]) / T));
    const double z = w[0] + w[1] + w[2];
    for (std::size_t t = static_cast<std::size_t>(d.from); t < d.tokens.size(); ++t) {
      double p = 0;
      for (std::size_t j = 0; j < 3; ++j) p += w[j] / z * std::exp(-TableScorer::cost(adapter_of(d.nearest[j]), d.tokens[t]));
      want -= std::log(p);
    }
  }
  const auto& cbtm = r.systems.back();
  EXPECT_NEAR(cbtm.overall.nll, want, 1e-5 * want);
  EXPECT_GT(std::abs(cbtm.overall.nll - moin0->overall.nll), 1e-3 * want);  // the mixture is not MoIN here
  double clusters = 0;
  for (const auto& [k, c] : cbtm.per_cluster) clusters += c.nll;
  EXPECT_NEAR(clusters, cbtm.overall.nll, 1e-6 * want);
  EXPECT_EQ(r.to_json()["systems"].back()["key"], "cbtm");
  EXPECT_NE(r.markdown().find("| c-BTM (top-3, T=0.05) |"), std::string::npos);
}

TEST(EvalPpl, WithoutOracleOnlyNeededExpertsAreScored) {
  const int K = 6, P = 2;
  auto docs = random_docs(5, K, P, 9);
  for (auto& d : docs) d.routed = 2;
  TableScorer base(K);
  moin::PplOptions opts;
  opts.prefix_tokens = P;
  opts.oracle = false;
  opts.random = false;
  auto r = moin::evaluate_perplexity(docs, base, K, -1, nullptr, opts);
  EXPECT_EQ(r.systems.size(), 2u);  // base, MoIN
  std::set<int> used(base.rows_per_adapter_calls.begin(), base.rows_per_adapter_calls.end());
  EXPECT_EQ(used, (std::set<int>{-1, 2}));
}

// Clusters without an expert (too small, or a failed job) route to the base and are counted on their own;
// random draws from the clusters that are not left out (a too-small one gives the base, as for MoIN), the
// oracle chooses among the experts that exist; the oracle on a sample covers just that sample.
TEST(EvalPpl, ClustersWithoutAnExpertRouteToTheBaseAndTheOracleSampleIsFixed) {
  const int K = 5, P = 2;
  auto docs = random_docs(60, K, P, 21);
  std::vector<std::string> status = {"ok", "too_small", "ok", "unfinished", "ok"};
  TableScorer base(K);
  moin::PplOptions opts;
  opts.prefix_tokens = P;
  opts.batch_size = 4;
  opts.oracle = true;
  opts.oracle_docs = 10;
  auto r = moin::evaluate_perplexity(docs, base, K, -1, nullptr, opts, status);
  for (int a : base.rows_per_adapter_calls) EXPECT_TRUE(a == -1 || status[static_cast<std::size_t>(a)] == "ok") << a;
  double moin_nll = 0, none_nll = 0, orc = 0, orc_base = 0, random_nll = 0;
  std::set<int> drawn;
  std::int64_t none_docs = 0, sampled = 0;
  for (const auto& d : docs) {
    const bool has = status[static_cast<std::size_t>(d.routed)] == "ok";
    moin_nll += doc_nll(d, has ? d.routed : -1);
    if (!has) none_nll += doc_nll(d, -1), ++none_docs;
    const std::string& rs = status[static_cast<std::size_t>(d.random)];
    EXPECT_TRUE(rs == "ok" || rs == "too_small") << rs;  // never the unfinished one
    drawn.insert(d.random);
    random_nll += doc_nll(d, rs == "ok" ? d.random : -1);
    if (d.oracle >= 0) {
      ++sampled;
      double best = 1e300;
      for (int e : {0, 2, 4}) best = std::min(best, doc_nll(d, e));
      orc += best;
      orc_base += doc_nll(d, -1);
    }
  }
  ASSERT_GT(none_docs, 0);
  EXPECT_EQ(drawn, (std::set<int>{0, 1, 2, 4}));
  EXPECT_NEAR(r.find("random expert")->overall.nll, random_nll, 1e-9);
  EXPECT_EQ(sampled, 10);
  EXPECT_EQ(r.oracle_docs, 10);
  EXPECT_NEAR(r.find("MoIN (routed)")->overall.nll, moin_nll, 1e-9);
  EXPECT_EQ(r.routed_without_expert.docs, none_docs);
  EXPECT_NEAR(r.routed_without_expert.nll, none_nll, 1e-9);
  const auto* o = r.find("oracle expert (sample of 10 docs)");
  ASSERT_NE(o, nullptr);
  EXPECT_NEAR(o->overall.nll, orc, 1e-9);
  EXPECT_NEAR(o->base_same_docs.nll, orc_base, 1e-9);
  auto j = r.to_json();
  EXPECT_EQ(j["clusters_without_expert"]["1"], "too_small");
  EXPECT_EQ(j["clusters_without_expert"]["3"], "unfinished");
  EXPECT_EQ(j["routed_without_expert"]["docs"], none_docs);
  auto md = r.markdown();
  EXPECT_NE(md.find("routed to clusters too small for an expert"), std::string::npos) << md;
  EXPECT_NE(md.find("5 clusters: 3 experts, 1 too small for one (scored with the base), 1 missing (clusters 3: left out "
                    "of every system)"), std::string::npos) << md;
  EXPECT_EQ(j["experts"]["left_out"], nlohmann::json::array({3}));
  EXPECT_EQ(j["experts"]["too_small"], nlohmann::json::array({1}));
  EXPECT_NE(md.find("| 1 (no expert) |"), std::string::npos) << md;
  // Every expert missing is an error, not a table of base figures.
  EXPECT_THROW(moin::evaluate_perplexity(docs, base, K, -1, nullptr, opts,
                                         std::vector<std::string>(K, "missing")),
               moin::UserError);
}

TEST(EvalPpl, RouterSeesOnlyThePrefix) {
  TempDir dir;
  std::ofstream(dir / "c.txt") << std::string(200, 'x') << "\n";
  {
    std::ofstream out(dir / "c.txt");
    const char* w[] = {"alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"};
    std::mt19937 rng(1);
    for (int i = 0; i < 300; ++i) {
      for (int j = 0; j < 10; ++j) out << w[rng() % 8] << " ";
      out << "\n";
    }
  }
  moin::TokenizerTrainOptions to;
  to.input = {dir / "c.txt"};
  to.model_prefix = dir / "tok";
  to.vocab_size = 300;  // byte fallback needs 256 + the meta pieces
  moin::train_tokenizer(to);
  auto tok = moin::Tokenizer::load(dir / "tok.model");
  moin::PplOptions opts;
  opts.prefix_tokens = 4;
  opts.max_tokens = 12;
  opts.min_eval_tokens = 2;
  std::string secret = "zeta zeta zeta zeta zeta zeta zeta";
  std::vector<std::string> texts = {"alpha beta gamma delta " + secret, "alpha beta", "eta theta eta theta eta theta eta"};
  std::int64_t skipped = 0;
  auto docs = moin::make_eval_docs(texts, {"l1", "l2", "l3"}, tok, opts, &skipped);
  EXPECT_EQ(skipped, 1);  // "alpha beta" has nothing left to score after a 4-token prefix
  ASSERT_EQ(docs.size(), 2u);
  for (const auto& d : docs) {
    EXPECT_EQ(d.from, 5);
    EXPECT_LE(d.tokens.size(), 12u);
    EXPECT_EQ(d.tokens[0], tok.bos_id());
    EXPECT_EQ(tok.encode(d.prefix_text),
              std::vector<int>(d.tokens.begin() + 1, d.tokens.begin() + 5));
  }
  EXPECT_EQ(docs[0].prefix_text.find("zeta"), std::string::npos);
  EXPECT_EQ(docs[1].label, "l3");
}

}  // namespace

namespace {

// max_docs keeps a fixed uniform sample in file order, not the head of a file sorted by source.
TEST(EvalData, MaxDocsIsAFixedUniformSampleInFileOrder) {
  TempDir dir;
  {
    std::ofstream out(dir / "docs.jsonl");
    for (int i = 0; i < 400; ++i)
      out << nlohmann::json{{"text", "doc " + std::to_string(i)}, {"meta", {{"src", "s" + std::to_string(i / 100)}}}}.dump()
          << "\n";
    out << "not json\n";
  }
  std::vector<std::string> texts, labels;
  std::int64_t bad = 0;
  moin::read_jsonl_docs(dir / "docs.jsonl", "text", "meta.src", 40, texts, labels, &bad);
  ASSERT_EQ(texts.size(), 40u);
  EXPECT_EQ(bad, 1);
  std::set<std::string> sources(labels.begin(), labels.end());
  EXPECT_EQ(sources.size(), 4u);  // the first 40 lines would all be s0
  std::vector<int> ids;
  for (const auto& t : texts) ids.push_back(std::stoi(t.substr(4)));
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  EXPECT_EQ(std::set<int>(ids.begin(), ids.end()).size(), 40u);
  for (std::size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(labels[i], "s" + std::to_string(ids[i] / 100));
  // The same sample every time; max_docs = 0 or >= the file gives every document.
  std::vector<std::string> again, again_labels;
  moin::read_jsonl_docs(dir / "docs.jsonl", "text", "", 40, again, again_labels);
  EXPECT_EQ(again, texts);
  std::vector<std::string> all, all_labels;
  moin::read_jsonl_docs(dir / "docs.jsonl", "text", "", 0, all, all_labels);
  EXPECT_EQ(all.size(), 400u);
  all.clear();
  moin::read_jsonl_docs(dir / "docs.jsonl", "text", "", 1000, all, all_labels);
  EXPECT_EQ(all.size(), 400u);
  EXPECT_EQ(all[399], "doc 399");
}

}  // namespace
