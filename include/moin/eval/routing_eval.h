// How well the router works: agreement of prefix routing (the first P tokens, as a query arrives) with
// the full-document assignment for several P; agreement with the oracle expert (the one with the lowest
// perplexity, from a `moin eval ppl` report); label purity of the routed clusters; router throughput
// (batched queries per second) and single-query latency percentiles.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "moin/core/error.h"

namespace moin {

class Router;

struct RoutingEvalOptions {
  std::string data;
  std::string text_field = "text";
  std::string label_field = "meta.pile_set_name";
  std::string partition;
  std::string tokenizer;
  std::vector<int> prefix_tokens = {16, 32, 64, 128, 256};
  std::int64_t max_docs = 0;
  std::string ppl_json;
  int latency_queries = 200;
  int latency_prefix = 32;
  int batch_size = 256;
  std::string json;
  std::string markdown;
  bool plots = true;

  template <class V> void visit(V& v) {
    v("data", data, "documents to route (JSONL)");
    v("text_field", text_field, "dotted path of the text in each JSON object");
    v("label_field", label_field, "dotted path of the reference label (\"\" = none; no purity then)");
    v("partition", partition, "partition directory: the router's embedder and centroids");
    v("tokenizer", tokenizer, "SentencePiece model for prefixes (default: the partition's tokenizer)");
    v("prefix_tokens", prefix_tokens, "prefix lengths (tokens) compared with the full-document assignment");
    v("max_docs", max_docs, "route at most this many documents (0 = all): a fixed uniform sample of the file, in file order");
    v("ppl_json", ppl_json, "a `moin eval ppl --json` report on the same data: adds agreement with its oracle expert");
    v("latency_queries", latency_queries, "single queries timed for the latency percentiles");
    v("latency_prefix", latency_prefix, "prefix length (tokens) of the timed single queries");
    v("batch_size", batch_size, "queries per batch for the throughput figure");
    v("json", json, "write the report as JSON here");
    v("markdown", markdown, "write the table as Markdown here");
    v("plots", plots, "draw PNG plots next to the report with gnuplot (skipped with a warning if absent)");
  }
  void validate() const {
    for (int p : prefix_tokens) require(p > 0, "prefix_tokens must be positive");
    require(latency_queries >= 0, "latency_queries must be >= 0");
    require(batch_size > 0, "batch_size must be positive");
  }
};

struct RoutingReport {
  std::int64_t docs = 0;
  int num_experts = 0;
  std::vector<int> prefix_tokens;
  std::vector<double> agreement;              // per prefix length: fraction equal to the full-document route
  std::vector<std::int64_t> cluster_sizes;    // documents per expert (full-document routing)
  double label_purity = -1;                   // -1 when there are no labels
  // Oracle agreement (from a ppl report; -1 when not given): of the router at that report's prefix
  // length, and of full-document routing.
  double oracle_agreement_prefix = -1, oracle_agreement_full = -1, oracle_chance = -1;
  int oracle_choices = 0;  // the trained experts the oracle chose among (chance is one in them)
  int oracle_prefix_tokens = 0;
  std::int64_t oracle_docs = 0;
  double queries_per_s = 0;                   // batched, full documents
  double latency_ms_p50 = 0, latency_ms_p90 = 0, latency_ms_p99 = 0, latency_ms_max = 0;
  nlohmann::json to_json() const;
  std::string markdown() const;
};

// Fraction of documents whose label is the most frequent label of their cluster.
double label_purity(const std::vector<std::string>& labels, const std::vector<int>& clusters);

RoutingReport evaluate_routing(const Router& router, const std::vector<std::string>& texts,
                               const std::vector<std::string>& labels, const RoutingEvalOptions& opts);

// The whole command: reads the data, loads the router, evaluates, writes the reports and plots.
RoutingReport run_eval_routing(const RoutingEvalOptions& opts);

}  // namespace moin
