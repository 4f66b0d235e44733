// Held-out perplexity of every system (see perplexity.h).
#include "moin/eval/perplexity.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <cmath>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>

#include "moin/core/format.h"
#include "moin/core/progress.h"
#include "moin/core/reservoir.h"
#include "moin/data/corpus.h"
#include "moin/data/tokenizer.h"
#include "moin/train/experts_layout.h"

namespace moin {

double PplCell::ppl() const { return tokens ? std::exp(nll / static_cast<double>(tokens)) : 0.0; }

std::string json_path_string(const nlohmann::json& j, const std::string& dotted) {
  const nlohmann::json* node = &j;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = dotted.find('.', start);
    std::string key = dotted.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!node->is_object()) return "";
    auto it = node->find(key);
    if (it == node->end()) return "";
    node = &*it;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return node->is_string() ? node->get<std::string>() : "";
}

void read_jsonl_docs(const std::string& path, const std::string& text_field, const std::string& label_field,
                     std::int64_t max_docs, std::vector<std::string>& texts, std::vector<std::string>& labels,
                     std::int64_t* bad, IngestReport* report) {
  // The corpus reader, as partition uses it: every malformed line, missing field or bad byte is counted
  // by kind, none is dropped silently.
  CorpusOptions co;
  co.inputs = {path};
  co.format = "jsonl";
  co.text_field = text_field;
  co.label_field = label_field;
  co.long_docs = "truncate";  // a document is cut at max_tokens anyway; its pieces are not new documents
  CorpusReader reader(co);
  // With max_docs, a uniform reservoir sample (fixed seed) in file order: the head of a corpus sorted by
  // source would be one or two sources.
  struct Kept {
    std::int64_t ordinal;
    std::string text, label;
  };
  std::vector<Kept> kept;
  std::mt19937_64 rng(0x6D6F696E);
  std::int64_t n_good = 0;
  Document d;
  while (reader.next(d)) {
    Kept k{n_good, std::move(d.text), std::move(d.label)};
    const std::int64_t slot = max_docs > 0 ? reservoir_slot(n_good, max_docs, rng) : n_good;
    if (slot == static_cast<std::int64_t>(kept.size()))
      kept.push_back(std::move(k));
    else if (slot >= 0)
      kept[static_cast<std::size_t>(slot)] = std::move(k);
    ++n_good;
  }
  std::sort(kept.begin(), kept.end(), [](const Kept& a, const Kept& b) { return a.ordinal < b.ordinal; });
  for (auto& k : kept) {
    texts.push_back(std::move(k.text));
    labels.push_back(std::move(k.label));
  }
  const IngestReport& rep = reader.report();
  if (bad) {
    *bad = 0;
    for (int i = 0; i < kNumIssueKinds; ++i)
      if (issue_drops_document(static_cast<IssueKind>(i))) *bad += rep.counts[static_cast<std::size_t>(i)];
  }
  if (report) *report = rep;
}

std::vector<EvalDoc> make_eval_docs(const std::vector<std::string>& texts, const std::vector<std::string>& labels,
                                    const Tokenizer& tokenizer, const PplOptions& opts, std::int64_t* skipped) {
  std::vector<EvalDoc> docs;
  std::int64_t n_skipped = 0;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    auto ids = tokenizer.encode(texts[i]);
    if (static_cast<int>(ids.size()) > opts.max_tokens - 1) ids.resize(static_cast<std::size_t>(opts.max_tokens - 1));
    EvalDoc d;
    d.index = static_cast<std::int64_t>(i);
    d.label = i < labels.size() ? labels[i] : "";
    // Without a BOS (Qwen2's tokenizer.json has none) the first token has no context to be scored from.
    const int bos = tokenizer.bos_id() >= 0 ? 1 : 0;
    d.from = std::max(1, bos + opts.prefix_tokens);
    d.tokens.reserve(ids.size() + 1);
    if (bos) d.tokens.push_back(tokenizer.bos_id());
    d.tokens.insert(d.tokens.end(), ids.begin(), ids.end());
    if (d.eval_tokens() < opts.min_eval_tokens) {
      ++n_skipped;
      continue;
    }
    // The router's view: only the first P ids, decoded. Nothing after them reaches it.
    d.prefix_text = tokenizer.decode(std::vector<int>(ids.begin(), ids.begin() + opts.prefix_tokens));
    docs.push_back(std::move(d));
  }
  if (skipped) *skipped = n_skipped;
  return docs;
}

std::vector<std::pair<int, double>> cbtm_weights(const std::vector<int>& nearest, const std::vector<float>& d2,
                                                 int top_k, double temperature,
                                                 const std::vector<std::string>& expert_status) {
  require(!nearest.empty() && d2.size() == nearest.size(), "c-BTM: a document without its nearest experts");
  const std::size_t k = temperature > 0.0 ? std::min(nearest.size(), static_cast<std::size_t>(top_k)) : 1;
  auto adapter_of = [&](int e) {
    return expert_status.empty() || expert_status[static_cast<std::size_t>(e)] == "ok" ? e : -1;
  };
  std::vector<std::pair<int, double>> out;
  // Relative to the nearest (the largest weight is exp(0)): no underflow of every term at small T.
  double total = 0.0;
  for (std::size_t j = 0; j < k; ++j) {
    const double w = j == 0 ? 1.0 : std::exp(-(static_cast<double>(d2[j]) - d2[0]) / temperature);
    total += w;
    const int a = adapter_of(nearest[j]);
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& p) { return p.first == a; });
    if (it == out.end())
      out.emplace_back(a, w);
    else
      it->second += w;
  }
  for (auto& p : out) p.second /= total;
  return out;
}

namespace {

void add(PplCell& c, const EvalDoc& d, double nll) {
  c.nll += nll;
  c.tokens += d.eval_tokens();
  c.docs += 1;
}

void add(PplSystem& sys, const EvalDoc& d, double nll) {
  for (PplCell* c : {&sys.overall, &sys.per_cluster[d.routed], &sys.per_label[d.label]}) add(*c, d, nll);
}

// One (document, adapter) pair to score; -1 is the bare base.
struct Job {
  std::size_t doc;
  int adapter;
};

// The adapters one document needs, with their NLLs once scored (a handful per document, the oracle's
// sample aside).
struct DocScores {
  std::vector<std::pair<int, double>> by_adapter;
  void need(int a) {
    for (const auto& [x, v] : by_adapter)
      if (x == a) return;
    by_adapter.emplace_back(a, std::numeric_limits<double>::quiet_NaN());
  }
  double& at(int a) {
    for (auto& [x, v] : by_adapter)
      if (x == a) return v;
    throw std::logic_error("eval ppl: adapter " + std::to_string(a) + " was not scored");
  }
};

}  // namespace

PplReport evaluate_perplexity(std::vector<EvalDoc>& docs, Scorer& base, int K, int dense_adapter, Scorer* cpt,
                              const PplOptions& opts, const std::vector<std::string>& expert_status,
                              const std::vector<WholeSystem>& whole) {
  auto t0 = std::chrono::steady_clock::now();
  require(K > 0, "no experts to evaluate");
  const std::size_t n = docs.size();
  require(n > 0, "no documents to evaluate (all shorter than prefix_tokens + min_eval_tokens?)");
  std::vector<std::string> status = expert_status;
  if (status.empty()) status.assign(static_cast<std::size_t>(K), "ok");
  require(static_cast<int>(status.size()) == K, "eval ppl: one expert status per cluster expected");
  std::vector<int> experts;    // the clusters that have an expert: the oracle's choices
  std::vector<int> candidates;  // every cluster but the left-out ones (too-small ones score with the base)
  for (int e = 0; e < K; ++e) {
    if (status[static_cast<std::size_t>(e)] == "ok") experts.push_back(e);
    if (!expert_left_out(status[static_cast<std::size_t>(e)])) candidates.push_back(e);
  }
  require(!experts.empty(), "eval ppl: none of the " + std::to_string(K) + " clusters has an expert");
  auto has_expert = [&](int e) { return status[static_cast<std::size_t>(e)] == "ok"; };

  // The random system draws from the clusters the router chooses among, and a cluster without an expert
  // gives the base, as it does for MoIN.
  std::mt19937_64 rng(opts.seed);
  for (auto& d : docs) {
    require(d.routed >= 0 && d.routed < K, "a document was routed to a nonexistent expert");
    d.random = candidates[static_cast<std::size_t>(rng() % static_cast<std::uint64_t>(candidates.size()))];
    d.oracle = -1;
  }
  // The oracle's documents: all, or a fixed uniform sample (its own generator, so the sample does not
  // move the random system).
  std::vector<char> in_oracle(n, 0);
  std::int64_t n_oracle = 0;
  if (opts.oracle) {
    std::vector<std::size_t> order(n);
    for (std::size_t i = 0; i < n; ++i) order[i] = i;
    if (opts.oracle_docs > 0 && static_cast<std::size_t>(opts.oracle_docs) < n) {
      std::mt19937_64 sample_rng(opts.seed ^ 0x6F7261636C65ULL);
      std::shuffle(order.begin(), order.end(), sample_rng);
      order.resize(static_cast<std::size_t>(opts.oracle_docs));
    }
    for (auto i : order) in_oracle[i] = 1;
    n_oracle = static_cast<std::int64_t>(order.size());
    spdlog::info("eval ppl: oracle on {} of {} documents x {} experts = {} forward passes", n_oracle, n,
                 experts.size(), n_oracle * static_cast<std::int64_t>(experts.size()));
  }

  // c-BTM's mixture per document. One component: its NLL is that adapter's (T = 0 is MoIN exactly);
  // several: their per-token log-probabilities are mixed.
  std::vector<std::vector<std::pair<int, double>>> mix(opts.cbtm ? n : 0);
  std::vector<Job> token_jobs;
  for (std::size_t i = 0; i < mix.size(); ++i) {
    require(!docs[i].nearest.empty() && docs[i].nearest.front() == docs[i].routed,
            "eval ppl: c-BTM needs each document's nearest experts, the routed one first");
    mix[i] = cbtm_weights(docs[i].nearest, docs[i].nearest_d2, opts.cbtm_top_k, opts.cbtm_temperature, status);
    if (mix[i].size() > 1)
      for (const auto& [a, w] : mix[i]) token_jobs.push_back({i, a});
  }

  // Every (document, adapter) pair a system needs, each once.
  std::vector<DocScores> scores(n);
  for (std::size_t i = 0; i < n; ++i) {
    auto& sc = scores[i];
    sc.need(-1);
    if (!mix.empty() && mix[i].size() == 1) sc.need(mix[i].front().first);
    if (has_expert(docs[i].routed)) sc.need(docs[i].routed);
    if (opts.random && has_expert(docs[i].random)) sc.need(docs[i].random);
    if (dense_adapter >= 0) sc.need(dense_adapter);
    if (in_oracle[i])
      for (int e : experts) sc.need(e);
  }
  std::vector<Job> jobs;
  for (std::size_t i = 0; i < n; ++i)
    for (const auto& [a, v] : scores[i].by_adapter) jobs.push_back({i, a});
  // By adapter (each loaded once, most batches on one adapter: the fast path), then by length (little
  // padding); batches are cut regardless of adapter, so small clusters share batches.
  auto by_adapter_then_length = [&](const Job& x, const Job& y) {
    if (x.adapter != y.adapter) return x.adapter < y.adapter;
    return docs[x.doc].tokens.size() < docs[y.doc].tokens.size();
  };
  std::stable_sort(jobs.begin(), jobs.end(), by_adapter_then_length);
  std::stable_sort(token_jobs.begin(), token_jobs.end(), by_adapter_then_length);

  const std::int64_t whole_model_passes =
      static_cast<std::int64_t>(n) * ((cpt ? 1 : 0) + static_cast<std::int64_t>(whole.size()));
  // Counted in scoring passes (one document under one system's model or adapter), not documents: each
  // document is scored by several systems.
  Progress progress("eval ppl", static_cast<std::int64_t>(jobs.size() + token_jobs.size()) + whole_model_passes,
                    "passes");
  spdlog::info("eval ppl: {} documents, {} scoring passes (a document under one model or adapter)", n,
               static_cast<std::int64_t>(jobs.size() + token_jobs.size()) + whole_model_passes);
  struct Pass {
    std::int64_t tokens = 0;
    double seconds = 0.0;
  };
  std::map<std::string, Pass> passes_timed;
  auto pass_of = [&](int a) -> const char* { return a < 0 ? "base" : a == dense_adapter ? "dense" : "experts"; };
  auto describe = [&](int a) {
    return a < 0 ? std::string("the base model")
                 : a == dense_adapter ? std::string("the dense LoRA") : "expert " + std::to_string(a);
  };
  // Scores jobs [b, e) of `list` with `s` in one call: NLL sums, or (per_token) the per-token terms.
  // `whole` names a system that is a model of its own (cpt, arrow; null: the base scorer's adapters). A
  // NaN would print as a perplexity ("-nan", "+0.0%") and pass for a result: it fails here. Time is shared
  // among the batch's passes by tokens.
  auto score_batch = [&](Scorer& s, const std::vector<Job>& list, std::size_t b, std::size_t e, const char* whole,
                         bool per_token, std::vector<std::vector<float>>* token_lp) {
    std::vector<std::vector<int>> seqs;
    std::vector<int> from, adapter;
    std::int64_t batch_tokens = 0;
    for (std::size_t j = b; j < e; ++j) {
      const auto& d = docs[list[j].doc];
      seqs.push_back(d.tokens);
      from.push_back(d.from);
      adapter.push_back(list[j].adapter);
      batch_tokens += static_cast<std::int64_t>(d.tokens.size());
    }
    auto t = std::chrono::steady_clock::now();
    std::vector<double> nll;
    if (per_token) {
      *token_lp = s.token_logprobs(seqs, from, adapter);
      require(token_lp->size() == seqs.size(), "scorer returned the wrong number of results");
      for (const auto& v : *token_lp) {
        double sum = 0.0;
        for (float x : v) sum -= x;
        nll.push_back(sum);
      }
    } else {
      nll = s.nll(seqs, from, adapter);
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    require(nll.size() == seqs.size(), "scorer returned the wrong number of results");
    for (std::size_t j = b; j < e; ++j) {
      const auto& job = list[j];
      const double v = nll[j - b];
      if (!std::isfinite(v))
        throw std::runtime_error("eval ppl: " + (whole ? std::string(whole) : describe(job.adapter)) +
                                 " gives a non-finite loss (" + std::to_string(v) + ") on document " +
                                 std::to_string(docs[job.doc].index) +
                                 ": NaN or infinite weights in its model or adapter?");
      if (!whole && !per_token) scores[job.doc].at(job.adapter) = v;
      auto& p = passes_timed[whole ? whole : per_token ? "cbtm" : pass_of(job.adapter)];
      const auto tok = static_cast<std::int64_t>(docs[job.doc].tokens.size());
      p.tokens += tok;
      p.seconds += dt * static_cast<double>(tok) / static_cast<double>(std::max<std::int64_t>(batch_tokens, 1));
    }
    progress.add(static_cast<std::int64_t>(e - b));
    return nll;
  };
  const auto batch = static_cast<std::size_t>(opts.batch_size);
  for (std::size_t b = 0; b < jobs.size(); b += batch)
    score_batch(base, jobs, b, std::min(jobs.size(), b + batch), nullptr, false, nullptr);
  // c-BTM: each document's mixture, -sum_t log sum_j w_j p_j(t), from its components' per-token terms.
  std::vector<double> nll_cbtm(mix.size(), std::numeric_limits<double>::quiet_NaN());
  {
    std::vector<std::vector<std::vector<float>>> parts(mix.size());  // [doc][component] per-token log-probs
    for (std::size_t i = 0; i < mix.size(); ++i) parts[i].resize(mix[i].size());
    std::vector<std::vector<float>> lp;
    for (std::size_t b = 0; b < token_jobs.size(); b += batch) {
      const std::size_t e = std::min(token_jobs.size(), b + batch);
      score_batch(base, token_jobs, b, e, nullptr, true, &lp);
      for (std::size_t j = b; j < e; ++j) {
        const auto& job = token_jobs[j];
        const auto& m = mix[job.doc];
        const auto c = static_cast<std::size_t>(
            std::find_if(m.begin(), m.end(), [&](const auto& p) { return p.first == job.adapter; }) - m.begin());
        parts[job.doc][c] = std::move(lp[j - b]);
      }
    }
    for (std::size_t i = 0; i < mix.size(); ++i) {
      if (mix[i].size() == 1) {
        nll_cbtm[i] = scores[i].at(mix[i].front().first);
        continue;
      }
      std::vector<double> log_w;
      for (const auto& [a, w] : mix[i]) log_w.push_back(std::log(w));
      double nll = 0.0;
      for (std::size_t t = 0; t < parts[i].front().size(); ++t) {
        double top = -std::numeric_limits<double>::infinity();
        for (std::size_t c = 0; c < log_w.size(); ++c) top = std::max(top, log_w[c] + parts[i][c][t]);
        double sum = 0.0;
        for (std::size_t c = 0; c < log_w.size(); ++c) sum += std::exp(log_w[c] + parts[i][c][t] - top);
        nll -= top + std::log(sum);
      }
      nll_cbtm[i] = nll;
    }
  }
  // Systems that are models of their own score every document once, with no adapter of the base's.
  auto score_whole = [&](Scorer& s, const char* what) {
    std::vector<Job> list;
    for (std::size_t i = 0; i < n; ++i) list.push_back({i, -1});
    std::stable_sort(list.begin(), list.end(), [&](const Job& x, const Job& y) {
      return docs[x.doc].tokens.size() < docs[y.doc].tokens.size();
    });
    std::vector<double> out(n, std::numeric_limits<double>::quiet_NaN());
    for (std::size_t b = 0; b < n; b += batch) {
      const std::size_t e = std::min(n, b + batch);
      auto v = score_batch(s, list, b, e, what, false, nullptr);
      for (std::size_t j = b; j < e; ++j) out[list[j].doc] = v[j - b];
    }
    return out;
  };
  std::vector<double> nll_cpt;
  std::vector<std::vector<double>> nll_whole;
  if (cpt) nll_cpt = score_whole(*cpt, "cpt");
  for (const auto& w : whole) {
    require(w.scorer != nullptr, "eval ppl: system " + w.key + " has no scorer");
    nll_whole.push_back(score_whole(*w.scorer, w.key.c_str()));
  }
  progress.finish();

  PplReport r;
  r.docs = static_cast<std::int64_t>(n);
  r.prefix_tokens = opts.prefix_tokens;
  r.num_experts = K;
  r.expert_status = status;
  r.oracle_docs = n_oracle;
  PplSystem s_base{"base", "base"}, s_cpt{"cpt", "continued pre-training"}, s_dense{"dense", "dense LoRA"},
      s_moin{"moin", "MoIN (routed)"}, s_random{"random", "random expert"}, s_oracle{"oracle", "oracle expert"},
      s_cbtm{"cbtm", "c-BTM (top-" + std::to_string(opts.cbtm_top_k) + ", T=" + format_general(opts.cbtm_temperature) + ")"};
  std::vector<PplSystem> s_whole;
  for (const auto& w : whole) s_whole.push_back(PplSystem{w.key, w.name});
  for (std::size_t i = 0; i < n; ++i) {
    auto& d = docs[i];
    auto& sc = scores[i];
    const double nb = sc.at(-1);
    if (in_oracle[i]) {
      int best = experts.front();
      for (int e : experts)
        if (sc.at(e) < sc.at(best)) best = e;
      d.oracle = best;
      add(s_oracle, d, sc.at(best));
      add(s_oracle.base_same_docs, d, nb);
    }
    add(s_base, d, nb);
    if (cpt) add(s_cpt, d, nll_cpt[i]);
    if (dense_adapter >= 0) add(s_dense, d, sc.at(dense_adapter));
    if (has_expert(d.routed)) {
      add(s_moin, d, sc.at(d.routed));
    } else {
      add(s_moin, d, nb);
      add(r.routed_without_expert, d, nb);
    }
    if (opts.random) add(s_random, d, has_expert(d.random) ? sc.at(d.random) : nb);
    if (opts.cbtm) add(s_cbtm, d, nll_cbtm[i]);
    for (std::size_t w = 0; w < whole.size(); ++w) add(s_whole[w], d, nll_whole[w][i]);
    r.index.push_back(d.index);
    r.routed.push_back(d.routed);
    r.oracle.push_back(d.oracle);
    r.labels.push_back(d.label);
  }
  r.systems.push_back(s_base);
  if (cpt) r.systems.push_back(s_cpt);
  if (dense_adapter >= 0) r.systems.push_back(s_dense);
  r.systems.push_back(s_moin);
  if (opts.random) r.systems.push_back(s_random);
  if (opts.oracle) {
    if (n_oracle < r.docs) s_oracle.name += " (sample of " + std::to_string(n_oracle) + " docs)";
    r.systems.push_back(s_oracle);
  }
  if (opts.cbtm) r.systems.push_back(s_cbtm);
  for (auto& sw : s_whole) r.systems.push_back(std::move(sw));
  r.throughput = nlohmann::json::object();
  for (const auto& [name, p] : passes_timed)
    r.throughput[name] = {{"tokens", p.tokens}, {"seconds", p.seconds},
                          {"tokens_per_s", p.seconds > 0 ? static_cast<double>(p.tokens) / p.seconds : 0.0}};
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

const PplSystem* PplReport::find(const std::string& name) const {
  for (const auto& s : systems)
    if (s.name == name) return &s;
  return nullptr;
}

namespace {
nlohmann::json cell_json(const PplCell& c) {
  return {{"ppl", c.ppl()}, {"nll_per_token", c.nll_per_token()}, {"tokens", c.tokens}, {"docs", c.docs}};
}
std::string fmt(double v, int prec = 2) { return format_fixed(v, prec); }

struct ExpertCounts {
  std::int64_t trained = 0;
  std::vector<std::size_t> too_small, left_out;
};
ExpertCounts count_experts(const std::vector<std::string>& status, int num_experts) {
  ExpertCounts c;
  if (status.empty()) c.trained = num_experts;  // no statuses given: every cluster has an expert
  for (std::size_t e = 0; e < status.size(); ++e) {
    c.trained += status[e] == "ok";
    if (status[e] == "too_small") c.too_small.push_back(e);
    if (expert_left_out(status[e])) c.left_out.push_back(e);
  }
  return c;
}
}  // namespace

nlohmann::json PplReport::to_json() const {
  nlohmann::json j;
  j["docs"] = docs;
  j["skipped_short"] = skipped_short;
  j["prefix_tokens"] = prefix_tokens;
  j["num_experts"] = num_experts;
  j["seconds"] = seconds;
  j["systems"] = nlohmann::json::array();
  for (const auto& s : systems) {
    nlohmann::json js = cell_json(s.overall);
    js["name"] = s.name;
    js["key"] = s.key;
    for (const auto& [k, c] : s.per_cluster) js["per_cluster"][std::to_string(k)] = cell_json(c);
    for (const auto& [k, c] : s.per_label) js["per_label"][k.empty() ? "(none)" : k] = cell_json(c);
    j["systems"].push_back(js);
  }
  j["documents"] = {{"index", index}, {"routed", routed}, {"oracle", oracle}, {"label", labels}};
  j["oracle_docs"] = oracle_docs;
  // Clusters without an expert, by reason, and the documents routed to them (scored by the base model).
  nlohmann::json missing = nlohmann::json::object();
  for (std::size_t e = 0; e < expert_status.size(); ++e)
    if (expert_status[e] != "ok") missing[std::to_string(e)] = expert_status[e];
  j["clusters_without_expert"] = missing;
  // What every system chose among: the trained experts, the too-small clusters (the base), and the clusters
  // left out of every system (their experts are missing or unfinished).
  const auto ex = count_experts(expert_status, num_experts);
  j["experts"] = {{"clusters", num_experts}, {"trained", ex.trained}, {"too_small", ex.too_small}, {"left_out", ex.left_out}};
  j["routed_without_expert"] = cell_json(routed_without_expert);
  if (!cache_stats.is_null()) j["adapter_cache"] = cache_stats;
  if (!throughput.is_null()) j["throughput"] = throughput;
  if (!ingest.is_null()) j["ingest"] = ingest;
  return j;
}

std::string PplReport::markdown() const {
  std::ostringstream o;
  const PplSystem* b = find("base");
  const auto ex = count_experts(expert_status, num_experts);
  const auto& too_small = ex.too_small;
  const auto& left_out = ex.left_out;
  auto ids = [](const std::vector<std::size_t>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size() && i < 20; ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return v.size() > 20 ? s + ", ..." : s;
  };
  o << "Held-out perplexity (" << docs << " documents, the router reads the first " << prefix_tokens
    << " tokens, perplexity on the rest; " << num_experts << " clusters: " << ex.trained << " experts";
  if (!too_small.empty()) o << ", " << too_small.size() << " too small for one (scored with the base)";
  if (!left_out.empty())
    o << ", " << left_out.size() << " missing (clusters " << ids(left_out) << ": left out of every system)";
  o << "; token-weighted)\n\n";
  o << "| system | tokens | NLL/token | perplexity | vs base |\n| --- | ---: | ---: | ---: | ---: |\n";
  for (const auto& s : systems) {
    // A system scored on a sample (the oracle) is compared with the base on the same documents.
    const PplCell& ref = s.base_same_docs.docs > 0 ? s.base_same_docs : (b ? b->overall : s.overall);
    double rel = ref.ppl() > 0 ? 100.0 * (s.overall.ppl() / ref.ppl() - 1.0) : 0.0;
    o << "| " << s.name << " | " << s.overall.tokens << " | " << fmt(s.overall.nll_per_token(), 4) << " | "
      << fmt(s.overall.ppl()) << " | " << (s.name == "base" ? std::string("") : (rel >= 0 ? "+" : "") + fmt(rel, 1) + "%")
      << " |\n";
  }
  if (routed_without_expert.docs > 0)
    o << "\n" << routed_without_expert.docs << " documents (" << routed_without_expert.tokens
      << " tokens) were routed to clusters too small for an expert (" << too_small.size() << " of " << num_experts
      << " clusters); MoIN scores them with the base model (perplexity " << fmt(routed_without_expert.ppl())
      << "), as the random system does for its draws of those clusters.\n";
  // key_of(system, key) -> the cell, or null where the system has none (the oracle's sample).
  auto table = [&](const char* what, auto key_of, const auto& keys, auto row_name) {
    o << "\nPerplexity per " << what << "\n\n| " << what << " | docs | tokens |";
    for (const auto& s : systems) o << " " << s.name << " |";
    o << "\n| --- | ---: | ---: |";
    for (std::size_t i = 0; i < systems.size(); ++i) o << " ---: |";
    o << "\n";
    for (const auto& k : keys) {
      const PplCell* first = key_of(systems[0], k);
      o << "| " << row_name(k) << " | " << first->docs << " | " << first->tokens << " |";
      for (const auto& s : systems) {
        const PplCell* c = key_of(s, k);
        o << " " << (c ? fmt(c->ppl()) : std::string("-")) << " |";
      }
      o << "\n";
    }
  };
  if (!systems.empty()) {
    std::vector<int> clusters;
    for (const auto& [k, c] : systems[0].per_cluster) clusters.push_back(k);
    table(
        "cluster",
        [](const PplSystem& s, int k) -> const PplCell* {
          auto it = s.per_cluster.find(k);
          return it == s.per_cluster.end() ? nullptr : &it->second;
        },
        clusters,
        [&](int k) {
          const bool none = k < static_cast<int>(expert_status.size()) && expert_status[static_cast<std::size_t>(k)] != "ok";
          return std::to_string(k) + (none ? " (no expert)" : "");
        });
    std::vector<std::string> labs;
    for (const auto& [k, c] : systems[0].per_label) labs.push_back(k);
    if (!(labs.size() == 1 && labs[0].empty()))
      table(
          "label",
          [](const PplSystem& s, const std::string& k) -> const PplCell* {
            auto it = s.per_label.find(k);
            return it == s.per_label.end() ? nullptr : &it->second;
          },
          labs, [](const std::string& k) { return k; });
  }
  return o.str();
}

}  // namespace moin
