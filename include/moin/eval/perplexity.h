// Held-out perplexity of every system in one run: base, continued pre-training, dense LoRA, MoIN
// (routed), random expert, oracle (the best expert per document), and the comparison methods over the
// same experts: the c-BTM ensemble (the prefix's top-k experts, their next-token distributions mixed with
// weights softmax(-d^2 / T)), Arrow (zero-shot token-level routing in every projection, model/arrow.h) and a
// learned token-level mixture (routers in every layer trained over the frozen experts, model/mixture.h); and
// PEER blocks trained beside the frozen base with the experts' parameters (model/peer.h).
//
// No leakage: each document is tokenized (BOS + ids, cut at max_tokens); the router sees only the text of
// the first prefix_tokens ids, and perplexity counts only the tokens after them (the model still reads
// the prefix as context). Every system is scored on exactly the same tokens, so the figures compare.
// Perplexity is token-weighted: exp(sum of NLL / number of tokens), overall, per cluster (the routed
// expert) and per reference label.
//
// Work is batched across adapters: every (document, adapter) pair any system needs is one job; jobs are
// ordered by adapter, then length, and cut into full batches that may mix adapters (one mixed-adapter
// forward pass each), so each adapter is loaded once and thousands of tiny clusters still fill batches.
// Memory is O(documents) plus the oracle's sample, never clusters x documents.
//
// Clusters without an expert (too small to train, or a failed job) route to the base model; their
// documents are counted on their own (routed_without_expert). The oracle (every expert on every document)
// is opt-in, on all documents or on a fixed sample.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "moin/core/error.h"
#include "moin/eval/scorer.h"

namespace moin {

class Router;
class Tokenizer;
struct IngestReport;

struct PplOptions {
  std::string data;                        // held-out JSONL
  std::string text_field = "text";
  std::string label_field = "meta.pile_set_name";
  std::string base;                        // base model folder (HF layout)
  std::string tokenizer;                   // .model or tokenizer.json (default: the partition's)
  std::string partition;                   // partition directory (router)
  std::string experts;                     // folder of expert adapters: experts/<k>/ (PEFT layout)
  std::string dense;                       // dense LoRA adapter folder (optional)
  std::string cpt;                         // continued-pre-training model folder (optional)
  int prefix_tokens = 32;
  int max_tokens = 256;
  int min_eval_tokens = 8;
  std::int64_t max_docs = 0;
  int batch_size = 8;
  bool oracle = false;
  std::int64_t oracle_docs = 0;
  bool random = true;
  bool cbtm = false;
  int cbtm_top_k = 2;
  double cbtm_temperature = 0.1;
  bool arrow = false;
  int arrow_top_k = 3;
  double arrow_temperature = 1.0;
  std::string mixture;                     // a trained mixture folder (moin train --mode mixture); "" = none
  std::string peer;                        // a trained PEER folder (moin train --mode peer); "" = none
  bool require_all_experts = false;
  std::uint64_t seed = 1234;
  int cache_size = 4;
  std::string device = "auto";
  std::string dtype = "float32";
  std::string json;                        // report paths (optional)
  std::string markdown;
  bool plots = true;

  template <class V> void visit(V& v) {
    v("data", data, "held-out documents (JSONL)");
    v("text_field", text_field, "dotted path of the text in each JSON object");
    v("label_field", label_field, "dotted path of the reference label (\"\" = none)");
    v("base", base, "base model folder (config.json + model.safetensors)");
    v("tokenizer", tokenizer, "tokenizer of the base, SentencePiece .model or tokenizer.json (default: the partition's tokenizer)");
    v("partition", partition, "partition directory: the router's embedder and centroids");
    v("experts", experts, "folder holding one adapter per cluster: EXPERTS/<k>/adapter_config.json");
    v("dense", dense, "dense LoRA adapter folder (trained on the whole corpus); \"\" = not evaluated");
    v("cpt", cpt, "continued-pre-training model folder; \"\" = not evaluated");
    v("prefix_tokens", prefix_tokens, "the router sees only the first P tokens; perplexity counts the rest");
    v("max_tokens", max_tokens, "tokens read per document, BOS included (the model's context)");
    v("min_eval_tokens", min_eval_tokens, "documents with fewer tokens after the prefix are skipped (counted)");
    v("max_docs", max_docs, "evaluate at most this many documents (0 = all): a fixed uniform sample of the file, in file order");
    v("batch_size", batch_size, "sequences per forward pass");
    v("oracle", oracle, "also score every expert on every document (oracle = best expert per document): "
      "documents x experts forward passes");
    v("oracle_docs", oracle_docs, "with oracle: score it on a fixed sample of this many documents (0 = all)");
    v("random", random, "also score a uniformly random expert per document (seeded; among the experts that exist)");
    v("cbtm", cbtm, "also score the c-BTM ensemble: the prefix's cbtm_top_k nearest experts, next-token "
      "distributions mixed with weights softmax(-d^2 / cbtm_temperature) (d^2: squared L2 distance to the centroid)");
    v("cbtm_top_k", cbtm_top_k, "c-BTM: experts mixed per document");
    v("cbtm_temperature", cbtm_temperature, "c-BTM: softmax temperature over -d^2 (0 = the nearest expert alone: MoIN)");
    v("arrow", arrow, "also score Arrow: every expert loaded at once, each projection mixing per token the "
      "arrow_top_k experts whose prototypes are nearest the token (no training)");
    v("arrow_top_k", arrow_top_k, "Arrow: experts mixed per token and projection");
    v("arrow_temperature", arrow_temperature, "Arrow: softmax temperature over the top-k similarities");
    v("mixture", mixture, "also score a learned token-level mixture of the experts: its folder (moin train "
      "--mode mixture; mixture.json names the experts it mixes); \"\" = not evaluated");
    v("peer", peer, "also score the base with trained PEER blocks: their folder (moin train --mode peer); \"\" = "
      "not evaluated");
    v("require_all_experts", require_all_experts,
      "fail when a cluster's expert is missing or unfinished (default: warn, and route its documents to the base; "
      "clusters the trainer skipped as too small never fail)");
    v("seed", seed, "seed of the random-expert system");
    v("cache_size", cache_size, "adapters kept on the device at once (LRU)");
    v("device", device, "cpu, cuda, cuda:N or auto");
    v("dtype", dtype, "float32, bfloat16 or float16");
    v("json", json, "write the report as JSON here");
    v("markdown", markdown, "write the tables as Markdown here");
    v("plots", plots, "draw PNG plots next to the report with gnuplot (skipped with a warning if absent)");
  }
  void validate() const {
    require(prefix_tokens >= 0, "prefix_tokens must be >= 0");
    require(max_tokens > prefix_tokens + 1, "max_tokens must exceed prefix_tokens + 1");
    require(min_eval_tokens >= 1, "min_eval_tokens must be >= 1");
    require(batch_size > 0, "batch_size must be positive");
    require(cache_size > 0, "cache_size must be positive");
    require(max_docs >= 0, "max_docs must be >= 0");
    require(oracle_docs >= 0, "oracle_docs must be >= 0");
    require(cbtm_top_k >= 1, "cbtm_top_k must be >= 1");
    require(cbtm_temperature >= 0.0, "cbtm_temperature must be >= 0");
    require(arrow_top_k >= 1, "arrow_top_k must be >= 1");
    require(arrow_temperature > 0.0, "arrow_temperature must be positive");
  }
};

// One held-out document as evaluated.
struct EvalDoc {
  std::int64_t index = 0;  // position in the input file (among readable documents)
  std::string label;
  std::vector<int> tokens;  // BOS + ids (cut at max_tokens)
  int from = 0;             // first scored position: 1 + prefix_tokens
  std::string prefix_text;  // what the router saw
  int routed = -1, random = -1, oracle = -1;
  // c-BTM: the prefix's nearest experts, nearest first (nearest[0] == routed), and their squared L2
  // distances to the prefix's embedding.
  std::vector<int> nearest;
  std::vector<float> nearest_d2;
  std::int64_t eval_tokens() const { return static_cast<std::int64_t>(tokens.size()) - from; }
};

// Token-weighted NLL sums.
struct PplCell {
  double nll = 0.0;
  std::int64_t tokens = 0;
  std::int64_t docs = 0;
  double ppl() const;
  double nll_per_token() const { return tokens ? nll / static_cast<double>(tokens) : 0.0; }
};

struct PplSystem {
  std::string key;   // base, cpt, dense, moin, random, oracle, cbtm, arrow, mixture, peer
  std::string name;  // as the tables print it
  PplCell overall;
  // The base model's cell on the same documents, when the system covers only some (the oracle's sample).
  PplCell base_same_docs;
  std::map<int, PplCell> per_cluster;          // by routed expert
  std::map<std::string, PplCell> per_label;
};

struct PplReport {
  std::vector<PplSystem> systems;
  std::int64_t docs = 0, skipped_short = 0;
  int prefix_tokens = 0, num_experts = 0;
  double seconds = 0.0;
  std::vector<std::int64_t> index;            // per evaluated document: its position in the input
  std::vector<int> routed, oracle;            // oracle: -1 outside the oracle's sample
  std::vector<std::string> expert_status;     // per cluster: ok, too_small, unfinished, missing
  PplCell routed_without_expert;              // documents routed to a cluster without an expert (scored by the base)
  std::int64_t oracle_docs = 0;               // documents the oracle was computed on
  std::vector<std::string> labels;
  nlohmann::json cache_stats;
  // Forward throughput of each scoring pass: {"base"|"experts"|"dense"|"cpt"|"cbtm"|"arrow"|"mixture"|"peer": {tokens,
  // seconds,
  // tokens_per_s}}; "experts" includes adapter switches (with oracle and random off it is the routed pass).
  nlohmann::json throughput;
  nlohmann::json ingest;  // the CorpusReader's report of the data (counts of skipped or repaired lines)
  nlohmann::json to_json() const;
  std::string markdown() const;
  const PplSystem* find(const std::string& name) const;
};

// Tokenizes `texts` into EvalDocs (BOS + ids cut at max_tokens; the prefix text is the decoded first
// prefix_tokens ids); documents with fewer than min_eval_tokens after the prefix are left out and counted.
std::vector<EvalDoc> make_eval_docs(const std::vector<std::string>& texts, const std::vector<std::string>& labels,
                                    const Tokenizer& tokenizer, const PplOptions& opts, std::int64_t* skipped);

// A system that is a model of its own, scored on every document as it is (Arrow, a learned mixture).
struct WholeSystem {
  std::string key;   // the JSON key: arrow, mixture, peer
  std::string name;  // as the tables print it
  Scorer* scorer = nullptr;
};

// The evaluation proper. `base` scores with adapters 0..K-1 = experts and (when `dense_adapter` >= 0)
// that index = the dense LoRA; `cpt` (may be null) is the continued-pre-training model; each of `whole`
// scores every document with its own scorer, in the order given. The docs' `routed` must be set (by the router, from
// prefix_text), and with opts.cbtm their `nearest` and `nearest_d2`; random and oracle are filled in here.
// expert_status[e] != "ok" (see find_experts) marks a cluster without an expert; empty: all have one.
PplReport evaluate_perplexity(std::vector<EvalDoc>& docs, Scorer& base, int num_experts, int dense_adapter,
                              Scorer* cpt, const PplOptions& opts,
                              const std::vector<std::string>& expert_status = {},
                              const std::vector<WholeSystem>& whole = {});

// c-BTM's mixture for one document: (adapter, weight) pairs, weights softmax(-d^2 / T) over the nearest
// top_k experts (T = 0: the nearest alone, weight 1). An expert without an adapter (has_expert false) is
// the base model (-1), as MoIN routes it; components on the same adapter are merged.
std::vector<std::pair<int, double>> cbtm_weights(const std::vector<int>& nearest, const std::vector<float>& d2,
                                                 int top_k, double temperature,
                                                 const std::vector<std::string>& expert_status);

// The whole command: reads opts.data, loads the models, routes, evaluates, writes the reports.
PplReport run_eval_ppl(const PplOptions& opts);

// JSON text field at a dotted path ("meta.pile_set_name"); "" when absent or not a string.
std::string json_path_string(const nlohmann::json& j, const std::string& dotted);

// Reads the documents of a JSONL file with the CorpusReader: texts and labels (label_field may be "").
// Lines that are not JSON objects with a non-empty string text are skipped (counted in *bad); *report
// gets the reader's counts per kind of problem, with examples. max_docs > 0 keeps a uniform sample of
// that many documents (a fixed seed, so always the same ones), in file order: corpora are often sorted
// by source, and their first documents would be one source.
void read_jsonl_docs(const std::string& path, const std::string& text_field, const std::string& label_field,
                     std::int64_t max_docs, std::vector<std::string>& texts, std::vector<std::string>& labels,
                     std::int64_t* bad = nullptr, IngestReport* report = nullptr);

}  // namespace moin
