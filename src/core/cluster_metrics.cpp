// NMI, purity and the contingency table. Entropies in nats; NMI with the arithmetic mean of the two
// entropies as normaliser (scikit-learn's normalized_mutual_info_score, average_method="arithmetic").
#include "moin/core/cluster_metrics.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "moin/core/error.h"

namespace moin {

std::vector<std::int32_t> encode_labels(const std::vector<std::string>& labels, std::vector<std::string>* names) {
  std::unordered_map<std::string, std::int32_t> ids;
  std::vector<std::int32_t> out;
  out.reserve(labels.size());
  if (names) names->clear();
  for (const auto& l : labels) {
    auto [it, inserted] = ids.emplace(l, static_cast<std::int32_t>(ids.size()));
    if (inserted && names) names->push_back(l);
    out.push_back(it->second);
  }
  return out;
}

std::int64_t Contingency::total() const {
  std::int64_t n = 0;
  for (auto c : counts) n += c;
  return n;
}

Contingency contingency(const std::vector<std::int32_t>& labels, const std::vector<std::int32_t>& clusters) {
  require(labels.size() == clusters.size(), "cluster metrics: " + std::to_string(labels.size()) + " labels but " +
                                                std::to_string(clusters.size()) + " cluster ids");
  require(!labels.empty(), "cluster metrics: no documents");
  Contingency t;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    require(labels[i] >= 0 && clusters[i] >= 0, "cluster metrics: negative label or cluster id");
    t.n_labels = std::max(t.n_labels, labels[i] + 1);
    t.n_clusters = std::max(t.n_clusters, clusters[i] + 1);
  }
  t.counts.assign(std::size_t(t.n_clusters) * t.n_labels, 0);
  for (std::size_t i = 0; i < labels.size(); ++i) ++t.counts[std::size_t(clusters[i]) * t.n_labels + labels[i]];
  return t;
}

namespace {
// Entropy of the non-empty classes of a count vector.
double entropy(const std::vector<std::int64_t>& counts, double n) {
  double h = 0;
  for (auto c : counts)
    if (c > 0) h -= (c / n) * std::log(c / n);
  return h;
}
}  // namespace

double nmi(const Contingency& t) {
  double n = static_cast<double>(t.total());
  std::vector<std::int64_t> rows(t.n_clusters, 0), cols(t.n_labels, 0);
  for (int c = 0; c < t.n_clusters; ++c)
    for (int l = 0; l < t.n_labels; ++l) {
      rows[c] += t.at(c, l);
      cols[l] += t.at(c, l);
    }
  auto nonempty = [](const std::vector<std::int64_t>& v) { return std::count_if(v.begin(), v.end(), [](auto x) { return x > 0; }); };
  auto nr = nonempty(rows), nc = nonempty(cols);
  // scikit-learn: identical trivial partitions score 1; one trivial partition scores 0.
  if (nr == 1 && nc == 1) return 1.0;
  if (nr == 1 || nc == 1) return 0.0;
  double mi = 0;
  for (int c = 0; c < t.n_clusters; ++c)
    for (int l = 0; l < t.n_labels; ++l) {
      double nij = static_cast<double>(t.at(c, l));
      if (nij > 0) mi += (nij / n) * std::log(nij * n / (double(rows[c]) * double(cols[l])));
    }
  mi = std::max(mi, 0.0);
  double norm = 0.5 * (entropy(rows, n) + entropy(cols, n));
  return norm > 0 ? std::min(1.0, mi / norm) : 0.0;
}

double nmi(const std::vector<std::int32_t>& labels, const std::vector<std::int32_t>& clusters) {
  return nmi(contingency(labels, clusters));
}

double purity(const Contingency& t) {
  std::int64_t hit = 0;
  for (int c = 0; c < t.n_clusters; ++c) {
    std::int64_t best = 0;
    for (int l = 0; l < t.n_labels; ++l) best = std::max(best, t.at(c, l));
    hit += best;
  }
  return static_cast<double>(hit) / static_cast<double>(t.total());
}

double purity(const std::vector<std::int32_t>& labels, const std::vector<std::int32_t>& clusters) {
  return purity(contingency(labels, clusters));
}

std::vector<ClusterLabels> top_labels(const Contingency& t, int top) {
  std::vector<ClusterLabels> out;
  for (int c = 0; c < t.n_clusters; ++c) {
    ClusterLabels cl;
    cl.cluster = c;
    for (int l = 0; l < t.n_labels; ++l) {
      cl.size += t.at(c, l);
      if (t.at(c, l) > 0) cl.top.emplace_back(l, t.at(c, l));
    }
    std::stable_sort(cl.top.begin(), cl.top.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    if (static_cast<int>(cl.top.size()) > top) cl.top.resize(std::max(top, 0));
    out.push_back(std::move(cl));
  }
  return out;
}

nlohmann::json cluster_report(const std::vector<std::string>& labels, const std::vector<std::string>& clusters,
                              int top) {
  std::vector<std::string> label_names, cluster_names;
  auto l = encode_labels(labels, &label_names);
  auto c = encode_labels(clusters, &cluster_names);
  auto t = contingency(l, c);
  nlohmann::json out = {{"n", t.total()}, {"n_labels", t.n_labels}, {"n_clusters", t.n_clusters},
                        {"nmi", nmi(t)},   {"purity", purity(t)}};
  nlohmann::json list = nlohmann::json::array();
  for (const auto& cl : top_labels(t, top)) {
    nlohmann::json tops = nlohmann::json::array();
    for (auto [id, n] : cl.top) tops.push_back({label_names[id], n});
    list.push_back({{"cluster", cluster_names[cl.cluster]}, {"size", cl.size}, {"top", tops}});
  }
  out["clusters"] = list;
  return out;
}

}  // namespace moin
