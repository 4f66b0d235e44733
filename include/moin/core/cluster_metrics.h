// How well clusters match reference labels: normalised mutual information (arithmetic-mean
// normalisation, scikit-learn's normalized_mutual_info_score default), purity, and the contingency table
// with each cluster's most frequent labels. Labels and clusters are non-negative integer ids; string
// labels are turned into ids with encode_labels().
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace moin {

// Ids 0..m-1 in order of first appearance; `names` (optional) receives the label of each id.
std::vector<std::int32_t> encode_labels(const std::vector<std::string>& labels,
                                        std::vector<std::string>* names = nullptr);

// counts[c * n_labels + l] = documents of cluster c carrying label l.
struct Contingency {
  int n_clusters = 0, n_labels = 0;
  std::vector<std::int64_t> counts;
  std::int64_t at(int cluster, int label) const { return counts[std::size_t(cluster) * n_labels + label]; }
  std::int64_t total() const;
};

// UserError when the sizes differ, the input is empty or an id is negative.
Contingency contingency(const std::vector<std::int32_t>& labels, const std::vector<std::int32_t>& clusters);

// NMI = I(L; C) / ((H(L) + H(C)) / 2), natural logs. 1 when both partitions are a single class (as
// scikit-learn); 0 when exactly one of them is.
double nmi(const Contingency& t);
double nmi(const std::vector<std::int32_t>& labels, const std::vector<std::int32_t>& clusters);

// Fraction of documents whose label is the most frequent label of their cluster.
double purity(const Contingency& t);
double purity(const std::vector<std::int32_t>& labels, const std::vector<std::int32_t>& clusters);

// A cluster's size and its `top` most frequent labels (id, count), most frequent first, ties by id.
struct ClusterLabels {
  int cluster = 0;
  std::int64_t size = 0;
  std::vector<std::pair<std::int32_t, std::int64_t>> top;
};
std::vector<ClusterLabels> top_labels(const Contingency& t, int top = 3);

// Everything above for string labels and string cluster names, as one JSON object: {"n", "n_labels",
// "n_clusters", "nmi", "purity", "clusters": [{"cluster", "size", "top": [[label, count], ...]}, ...]}.
// Used by reports and `moin eval nmi`.
nlohmann::json cluster_report(const std::vector<std::string>& labels, const std::vector<std::string>& clusters,
                              int top = 3);

}  // namespace moin
