// Capped assignment by the global greedy rule, computed lazily with a heap. See balance.h.
#include "moin/partition/balance.h"

#include <cmath>
#include <limits>
#include <queue>
#include <string>

#include "moin/core/error.h"

namespace moin {

namespace {

struct Entry {
  float d;
  std::int32_t c;
  std::int64_t i;
};

// Heap order: the smallest (distance, document, cluster) on top.
struct Later {
  bool operator()(const Entry& a, const Entry& b) const {
    if (a.d != b.d) return a.d > b.d;
    if (a.i != b.i) return a.i > b.i;
    return a.c > b.c;
  }
};

inline float clean(float d) { return std::isnan(d) ? std::numeric_limits<float>::infinity() : d; }

// The nearest cluster of a row among those with room (all when room is null); lowest index on ties.
Entry nearest_with_room(const float* r, int k, const std::vector<std::int64_t>* room, std::int64_t i) {
  Entry e{0.0f, -1, i};
  for (int c = 0; c < k; ++c) {
    if (room && (*room)[c] == 0) continue;
    float d = clean(r[c]);
    if (e.c < 0 || d < e.d) e = {d, c, i};
  }
  return e;
}

}  // namespace

CappedAssignment assign_capped(std::int64_t n, int k, std::int64_t capacity,
                               const std::function<const float*(std::int64_t)>& row) {
  require(k > 0 && n >= 0, "assign_capped: k must be positive");
  require(capacity >= 0 && capacity * k >= n,
          "balanced assignment: a cap of " + std::to_string(capacity) + " documents x " + std::to_string(k) +
              " clusters cannot hold " + std::to_string(n) + " documents");
  CappedAssignment out;
  out.capacity = capacity;
  out.cluster.assign(static_cast<std::size_t>(n), -1);
  out.distance.assign(static_cast<std::size_t>(n), 0.0f);
  out.nearest.assign(static_cast<std::size_t>(n), -1);

  std::vector<Entry> init;
  init.reserve(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    Entry e = nearest_with_room(row(i), k, nullptr, i);
    out.nearest[i] = e.c;
    init.push_back(e);
  }
  std::priority_queue<Entry, std::vector<Entry>, Later> heap(Later{}, std::move(init));
  std::vector<std::int64_t> room(k, capacity);
  while (!heap.empty()) {
    Entry e = heap.top();
    heap.pop();
    if (room[e.c] > 0) {
      --room[e.c];
      out.cluster[e.i] = e.c;
      out.distance[e.i] = e.d;
      out.moved += e.c != out.nearest[e.i];
    } else {
      // Some cluster has room (capacity * k >= n and this document is not placed yet).
      heap.push(nearest_with_room(row(e.i), k, &room, e.i));
    }
  }
  return out;
}

}  // namespace moin
