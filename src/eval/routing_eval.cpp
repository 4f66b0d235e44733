// Routing accuracy, purity and speed (see routing_eval.h).
#include "moin/eval/routing_eval.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <sstream>

#include "moin/core/format.h"
#include "moin/route/router.h"

namespace moin {

double label_purity(const std::vector<std::string>& labels, const std::vector<int>& clusters) {
  require(labels.size() == clusters.size(), "label_purity: sizes differ");
  if (labels.empty()) return 0.0;
  std::map<int, std::map<std::string, std::int64_t>> counts;
  for (std::size_t i = 0; i < labels.size(); ++i) ++counts[clusters[i]][labels[i]];
  std::int64_t majority = 0;
  for (const auto& [c, m] : counts) {
    std::int64_t best = 0;
    for (const auto& [l, n] : m) best = std::max(best, n);
    majority += best;
  }
  return static_cast<double>(majority) / static_cast<double>(labels.size());
}

namespace {
double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  std::size_t at = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(at, v.size() - 1)];
}
std::string fmt(double v, int prec = 3) { return format_fixed(v, prec); }
}  // namespace

RoutingReport evaluate_routing(const Router& router, const std::vector<std::string>& texts,
                               const std::vector<std::string>& labels, const RoutingEvalOptions& opts) {
  require(!texts.empty(), "no documents to route");
  RoutingReport r;
  r.docs = static_cast<std::int64_t>(texts.size());
  r.num_experts = router.num_experts();

  auto t0 = std::chrono::steady_clock::now();
  auto full = router.route(texts, 1, opts.batch_size);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.queries_per_s = secs > 0 ? static_cast<double>(texts.size()) / secs : 0.0;
  std::vector<int> full_expert;
  r.cluster_sizes.assign(static_cast<std::size_t>(r.num_experts), 0);
  for (const auto& x : full) {
    full_expert.push_back(x.expert());
    ++r.cluster_sizes[static_cast<std::size_t>(x.expert())];
  }

  for (int p : opts.prefix_tokens) {
    auto pre = router.route_prefix(texts, p, 1, opts.batch_size);
    std::int64_t same = 0;
    for (std::size_t i = 0; i < pre.size(); ++i) same += pre[i].expert() == full_expert[i];
    r.prefix_tokens.push_back(p);
    r.agreement.push_back(static_cast<double>(same) / static_cast<double>(texts.size()));
  }

  bool has_labels = false;
  for (const auto& l : labels) has_labels = has_labels || !l.empty();
  if (has_labels) r.label_purity = label_purity(labels, full_expert);

  // Latency of one query at a time (what an online server sees), prefix-routed like a prompt.
  std::vector<double> ms;
  int nq = std::min<int>(opts.latency_queries, static_cast<int>(texts.size()));
  for (int i = 0; i < nq; ++i) {
    auto q0 = std::chrono::steady_clock::now();
    if (router.tokenizer() && opts.latency_prefix > 0)
      router.route_prefix({texts[static_cast<std::size_t>(i)]}, opts.latency_prefix);
    else
      router.route({texts[static_cast<std::size_t>(i)]});
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - q0).count());
  }
  r.latency_ms_p50 = percentile(ms, 0.5);
  r.latency_ms_p90 = percentile(ms, 0.9);
  r.latency_ms_p99 = percentile(ms, 0.99);
  r.latency_ms_max = ms.empty() ? 0.0 : *std::max_element(ms.begin(), ms.end());
  return r;
}

nlohmann::json RoutingReport::to_json() const {
  nlohmann::json j;
  j["docs"] = docs;
  j["num_experts"] = num_experts;
  j["prefix_agreement"] = nlohmann::json::array();
  for (std::size_t i = 0; i < prefix_tokens.size(); ++i)
    j["prefix_agreement"].push_back({{"prefix_tokens", prefix_tokens[i]}, {"agreement", agreement[i]}});
  j["cluster_sizes"] = cluster_sizes;
  if (label_purity >= 0) j["label_purity"] = label_purity;
  if (oracle_agreement_full >= 0)
    j["oracle"] = {{"docs", oracle_docs}, {"prefix_tokens", oracle_prefix_tokens},
                   {"agreement_prefix", oracle_agreement_prefix}, {"agreement_full", oracle_agreement_full},
                   {"chance", oracle_chance}, {"choices", oracle_choices}};
  j["throughput_queries_per_s"] = queries_per_s;
  j["latency_ms"] = {{"p50", latency_ms_p50}, {"p90", latency_ms_p90}, {"p99", latency_ms_p99}, {"max", latency_ms_max}};
  return j;
}

std::string RoutingReport::markdown() const {
  std::ostringstream o;
  o << "Routing (" << docs << " documents, " << num_experts << " experts)\n\n";
  o << "| prefix tokens | agreement with full-document routing |\n| ---: | ---: |\n";
  for (std::size_t i = 0; i < prefix_tokens.size(); ++i)
    o << "| " << prefix_tokens[i] << " | " << fmt(100.0 * agreement[i], 1) << "% |\n";
  o << "\n| measure | value |\n| --- | ---: |\n";
  if (label_purity >= 0) o << "| label purity of the routed clusters | " << fmt(100.0 * label_purity, 1) << "% |\n";
  if (oracle_agreement_full >= 0) {
    o << "| agreement with the oracle expert, router on " << oracle_prefix_tokens << "-token prefixes ("
      << oracle_docs << " docs) | " << fmt(100.0 * oracle_agreement_prefix, 1) << "% |\n";
    o << "| agreement with the oracle expert, router on full documents | " << fmt(100.0 * oracle_agreement_full, 1)
      << "% |\n";
    o << "| agreement with the oracle expert by chance (1 in the " << oracle_choices
      << " trained experts it chose among) | " << fmt(100.0 * oracle_chance, 1) << "% |\n";
  }
  o << "| throughput, batched full documents | " << fmt(queries_per_s, 0) << " queries/s |\n";
  o << "| latency of one query p50 / p90 / p99 / max | " << fmt(latency_ms_p50, 2) << " / " << fmt(latency_ms_p90, 2)
    << " / " << fmt(latency_ms_p99, 2) << " / " << fmt(latency_ms_max, 2) << " ms |\n";
  o << "\nDocuments per expert (full-document routing): ";
  for (std::size_t i = 0; i < cluster_sizes.size(); ++i) o << (i ? ", " : "") << i << ": " << cluster_sizes[i];
  o << "\n";
  return o.str();
}

}  // namespace moin
