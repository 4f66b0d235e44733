// A least-recently-used cache of expensive values (LoRA adapters on the device) keyed by expert id. A miss
// calls the loader (reads the adapter from disk) and, when the cache is full, evicts the entry used least
// recently first. It counts hits, misses, evictions and the time spent loading, for reports.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "moin/core/error.h"

namespace moin {

struct CacheStats {
  std::int64_t hits = 0, misses = 0, evictions = 0;
  double load_seconds = 0.0;  // total time spent in the loader
  double hit_rate() const { return hits + misses == 0 ? 0.0 : static_cast<double>(hits) / (hits + misses); }
};

template <class V> class LruCache {
 public:
  using Loader = std::function<V(int key)>;

  // capacity >= 1 entries.
  LruCache(std::size_t capacity, Loader loader) : capacity_(capacity), loader_(std::move(loader)) {
    require(capacity_ >= 1, "the adapter cache needs room for at least one adapter");
  }

  // The value of `key`, loading it on a miss; it becomes the most recently used.
  V& get(int key) {
    auto it = index_.find(key);
    if (it != index_.end()) {
      ++stats_.hits;
      order_.splice(order_.begin(), order_, it->second);  // move to the front (most recent)
      return it->second->second;
    }
    ++stats_.misses;
    // Evict before loading so that at most `capacity` values are resident at any time (device memory).
    while (order_.size() >= capacity_) {
      index_.erase(order_.back().first);
      order_.pop_back();
      ++stats_.evictions;
    }
    auto t0 = std::chrono::steady_clock::now();
    V value = loader_(key);
    stats_.load_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    order_.emplace_front(key, std::move(value));
    index_[key] = order_.begin();
    return order_.front().second;
  }

  bool contains(int key) const { return index_.count(key) != 0; }
  std::size_t size() const { return order_.size(); }
  std::size_t capacity() const { return capacity_; }
  // Keys from most to least recently used.
  std::vector<int> keys() const {
    std::vector<int> out;
    for (const auto& kv : order_) out.push_back(kv.first);
    return out;
  }
  const CacheStats& stats() const { return stats_; }
  void clear() {
    order_.clear();
    index_.clear();
  }

 private:
  std::size_t capacity_;
  Loader loader_;
  std::list<std::pair<int, V>> order_;  // front = most recently used
  std::unordered_map<int, typename std::list<std::pair<int, V>>::iterator> index_;
  CacheStats stats_;
};

}  // namespace moin
