// Capped ("balanced") assignment of documents to clusters, exact and with memory linear in n only.
//
// The rule: visit every (document, cluster) pair in increasing order of (distance, document index,
// cluster) and give the document that cluster when the document is still unassigned and the cluster
// holds fewer than `capacity` documents. Every document ends in exactly one cluster (capacity * k >= n is
// required) and no cluster exceeds the capacity. It is assign_balanced()'s greedy (kmeans.h) taken over
// all k candidates in one round, with the document index as the tie-break.
//
// It is computed lazily, without materialising the n x k pairs: a heap holds one entry per unassigned
// document, its nearest cluster that had room when the entry was made. When an entry comes out for a
// cluster that has filled up since, the document's row is scanned again for its nearest cluster with
// room and the entry goes back in (clusters only fill up, so that pair is the document's next pair in
// the global order that can still be taken). Memory: about 28 bytes per document; time
// O(n k log n) at worst. The distance rows are read through `row`, which may page them in from disk.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

namespace moin {

struct CappedAssignment {
  std::int64_t capacity = 0;
  std::vector<std::int32_t> cluster;  // [n] the capped assignment
  std::vector<float> distance;        // [n] distance to that cluster
  std::vector<std::int32_t> nearest;  // [n] the nearest cluster (lowest index on equal distances)
  std::int64_t moved = 0;             // documents whose cluster is not their nearest
};

// row(i) returns document i's k distances (smaller is nearer; NaN counts as +infinity). Documents are
// numbered in the order that breaks ties (the partition stage uses corpus order). UserError when
// capacity * k < n.
CappedAssignment assign_capped(std::int64_t n, int k, std::int64_t capacity,
                               const std::function<const float*(std::int64_t)>& row);

}  // namespace moin
