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

#include "moin/core/progress.h"
#include "moin/core/reservoir.h"
#include "moin/data/corpus.h"
#include "moin/data/tokenizer.h"

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

namespace {

// NLL of the listed documents under the scorer's current adapter, in batches.
void score_docs(Scorer& s, const std::vector<EvalDoc>& docs, const std::vector<std::size_t>& which, int batch,
                std::vector<double>& out, Progress* progress, const std::string& system) {
  for (std::size_t b = 0; b < which.size(); b += static_cast<std::size_t>(batch)) {
    std::size_t e = std::min(which.size(), b + static_cast<std::size_t>(batch));
    std::vector<std::vector<int>> seqs;
    std::vector<int> from;
    for (std::size_t i = b; i < e; ++i) {
      seqs.push_back(docs[which[i]].tokens);
      from.push_back(docs[which[i]].from);
    }
    auto nll = s.nll(seqs, from);
    require(nll.size() == seqs.size(), "scorer returned the wrong number of results");
    for (std::size_t i = b; i < e; ++i) {
      // A NaN would print as a perplexity ("-nan", "+0.0%") and pass for a result.
      if (!std::isfinite(nll[i - b]))
        throw std::runtime_error("eval ppl: " + system + " gives a non-finite loss (" + std::to_string(nll[i - b]) +
                                 ") on document " + std::to_string(docs[which[i]].index) +
                                 ": NaN or infinite weights in its model or adapter?");
      out[which[i]] = nll[i - b];
    }
    if (progress) progress->add(static_cast<std::int64_t>(e - b));
  }
}

void add(PplSystem& sys, const EvalDoc& d, double nll) {
  for (PplCell* c : {&sys.overall, &sys.per_cluster[d.routed], &sys.per_label[d.label]}) {
    c->nll += nll;
    c->tokens += d.eval_tokens();
    c->docs += 1;
  }
}

}  // namespace

PplReport evaluate_perplexity(std::vector<EvalDoc>& docs, Scorer& base, int K, int dense_adapter, Scorer* cpt,
                              const PplOptions& opts) {
  auto t0 = std::chrono::steady_clock::now();
  require(K > 0, "no experts to evaluate");
  const std::size_t n = docs.size();
  require(n > 0, "no documents to evaluate (all shorter than prefix_tokens + min_eval_tokens?)");
  // Docs sorted by length within each group keep padding small; the order does not change any figure.
  std::vector<std::size_t> all(n);
  for (std::size_t i = 0; i < n; ++i) all[i] = i;
  std::stable_sort(all.begin(), all.end(), [&](std::size_t a, std::size_t b) {
    return docs[a].tokens.size() < docs[b].tokens.size();
  });
  std::mt19937_64 rng(opts.seed);
  for (auto& d : docs) {
    require(d.routed >= 0 && d.routed < K, "a document was routed to a nonexistent expert");
    d.random = static_cast<int>(rng() % static_cast<std::uint64_t>(K));
  }

  std::int64_t passes = static_cast<std::int64_t>(n) * (1 + (cpt ? 1 : 0) + (dense_adapter >= 0 ? 1 : 0) +
                                                        (opts.oracle ? K : 1 + (opts.random ? 1 : 0)));
  Progress progress("eval ppl", passes, "docs");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> nll_base(n, nan), nll_cpt(n, nan), nll_dense(n, nan);
  std::vector<std::vector<double>> nll_exp(static_cast<std::size_t>(K), std::vector<double>(n, nan));

  struct Pass {
    std::int64_t tokens = 0;
    double seconds = 0.0;
  };
  std::map<std::string, Pass> passes_timed;
  auto since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  // Times one pass over `which` (tokens = every position forwarded, padding excluded).
  auto timed = [&](const char* pass, Scorer& s, const std::vector<std::size_t>& which, std::vector<double>& out,
                   const std::string& what) {
    auto t = std::chrono::steady_clock::now();
    score_docs(s, docs, which, opts.batch_size, out, &progress, what);
    auto& p = passes_timed[pass];
    p.seconds += since(t);
    for (std::size_t i : which) p.tokens += static_cast<std::int64_t>(docs[i].tokens.size());
  };
  base.use(-1);
  timed("base", base, all, nll_base, "the base model");
  for (int e = 0; e < K; ++e) {
    std::vector<std::size_t> need;
    for (std::size_t i : all)
      if (opts.oracle || docs[i].routed == e || (opts.random && docs[i].random == e)) need.push_back(i);
    if (need.empty()) continue;
    auto t = std::chrono::steady_clock::now();
    base.use(e);
    passes_timed["experts"].seconds += since(t);  // the adapter switch counts: routing pays it
    timed("experts", base, need, nll_exp[static_cast<std::size_t>(e)], "expert " + std::to_string(e));
  }
  if (dense_adapter >= 0) {
    base.use(dense_adapter);
    timed("dense", base, all, nll_dense, "the dense LoRA");
  }
  base.use(-1);
  if (cpt) {
    cpt->use(-1);
    timed("cpt", *cpt, all, nll_cpt, "the continued-pre-training model");
  }
  progress.finish();

  PplReport r;
  r.docs = static_cast<std::int64_t>(n);
  r.prefix_tokens = opts.prefix_tokens;
  r.num_experts = K;
  PplSystem s_base{"base"}, s_cpt{"continued pre-training"}, s_dense{"dense LoRA"}, s_moin{"MoIN (routed)"},
      s_random{"random expert"}, s_oracle{"oracle expert"};
  for (std::size_t i = 0; i < n; ++i) {
    auto& d = docs[i];
    if (opts.oracle) {
      int best = 0;
      for (int e = 1; e < K; ++e)
        if (nll_exp[e][i] < nll_exp[best][i]) best = e;
      d.oracle = best;
      add(s_oracle, d, nll_exp[best][i]);
    }
    add(s_base, d, nll_base[i]);
    if (cpt) add(s_cpt, d, nll_cpt[i]);
    if (dense_adapter >= 0) add(s_dense, d, nll_dense[i]);
    add(s_moin, d, nll_exp[d.routed][i]);
    if (opts.random) add(s_random, d, nll_exp[d.random][i]);
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
  if (opts.oracle) r.systems.push_back(s_oracle);
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
std::string fmt(double v, int prec = 2) {
  std::ostringstream ss;
  ss.setf(std::ios::fixed);
  ss.precision(prec);
  ss << v;
  return ss.str();
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
    for (const auto& [k, c] : s.per_cluster) js["per_cluster"][std::to_string(k)] = cell_json(c);
    for (const auto& [k, c] : s.per_label) js["per_label"][k.empty() ? "(none)" : k] = cell_json(c);
    j["systems"].push_back(js);
  }
  j["documents"] = {{"index", index}, {"routed", routed}, {"oracle", oracle}, {"label", labels}};
  if (!cache_stats.is_null()) j["adapter_cache"] = cache_stats;
  if (!throughput.is_null()) j["throughput"] = throughput;
  if (!ingest.is_null()) j["ingest"] = ingest;
  return j;
}

std::string PplReport::markdown() const {
  std::ostringstream o;
  const PplSystem* b = find("base");
  o << "Held-out perplexity (" << docs << " documents, the router reads the first " << prefix_tokens
    << " tokens, perplexity on the rest; " << num_experts << " experts; token-weighted)\n\n";
  o << "| system | tokens | NLL/token | perplexity | vs base |\n| --- | ---: | ---: | ---: | ---: |\n";
  for (const auto& s : systems) {
    double rel = b && b->overall.ppl() > 0 ? 100.0 * (s.overall.ppl() / b->overall.ppl() - 1.0) : 0.0;
    o << "| " << s.name << " | " << s.overall.tokens << " | " << fmt(s.overall.nll_per_token(), 4) << " | "
      << fmt(s.overall.ppl()) << " | " << (s.name == "base" ? std::string("") : (rel >= 0 ? "+" : "") + fmt(rel, 1) + "%")
      << " |\n";
  }
  auto table = [&](const char* what, auto key_of, const auto& keys) {
    o << "\nPerplexity per " << what << "\n\n| " << what << " | docs | tokens |";
    for (const auto& s : systems) o << " " << s.name << " |";
    o << "\n| --- | ---: | ---: |";
    for (std::size_t i = 0; i < systems.size(); ++i) o << " ---: |";
    o << "\n";
    for (const auto& k : keys) {
      const PplCell& first = key_of(systems[0], k);
      o << "| " << k << " | " << first.docs << " | " << first.tokens << " |";
      for (const auto& s : systems) o << " " << fmt(key_of(s, k).ppl()) << " |";
      o << "\n";
    }
  };
  if (!systems.empty()) {
    std::vector<int> clusters;
    for (const auto& [k, c] : systems[0].per_cluster) clusters.push_back(k);
    table("cluster", [](const PplSystem& s, int k) -> const PplCell& { return s.per_cluster.at(k); }, clusters);
    std::vector<std::string> labs;
    for (const auto& [k, c] : systems[0].per_label) labs.push_back(k);
    if (!(labs.size() == 1 && labs[0].empty()))
      table("label", [](const PplSystem& s, const std::string& k) -> const PplCell& { return s.per_label.at(k); },
            labs);
  }
  return o.str();
}

}  // namespace moin
