// Routed inference: the base model is loaded once and stays frozen on the device; expert adapters come
// and go. An LRU cache keeps up to `cache_size` adapters on the device, loading misses from disk (PEFT
// folders) and counting hits, misses and load time. Each forward call names its adapters per row
// (batch()), so one batch mixes experts and no expert is ever "active": the base model holds no adapter
// state. Callers that serve many queries order them by expert so that misses stay rare.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "moin/model/generate.h"
#include "moin/model/llama.h"
#include "moin/route/lru_cache.h"
#include "moin/train/experts_layout.h"

namespace moin {

class LoraAdapter;
class AdapterSet;

// The adapters of one forward call: the set (kept alive here) and how each row uses it.
struct AdapterBatch {
  std::shared_ptr<AdapterSet> set;
  LoraRouting routing;
  const LoraRouting* get() const { return routing.empty() ? nullptr : &routing; }
};

class RoutedModel {
 public:
  // adapter_dirs[i] is adapter i (PEFT layout); none is read until a batch first names it. An empty
  // folder name is a cluster without an expert: rows that name it run on the bare base.
  RoutedModel(LlamaForCausalLM base, std::vector<std::string> adapter_dirs, int cache_size = 4);
  ~RoutedModel();
  RoutedModel(const RoutedModel&) = delete;  // the cache's loader refers to this object
  RoutedModel& operator=(const RoutedModel&) = delete;

  // The adapters of a batch whose row b uses adapter per_row[b] (-1: the bare base), loading cache misses.
  // A batch may name more adapters than the cache holds: they stay alive until the batch is gone.
  AdapterBatch batch(const std::vector<int>& per_row);
  int num_adapters() const { return static_cast<int>(dirs_.size()); }
  LlamaForCausalLM& model() { return base_; }
  const CacheStats& cache_stats() const { return cache_.stats(); }
  const LruCache<std::shared_ptr<LoraAdapter>>& cache() const { return cache_; }

 private:
  LlamaForCausalLM base_;
  std::vector<std::string> dirs_;
  LruCache<std::shared_ptr<LoraAdapter>> cache_;
};

// ExpertFolder, find_experts, expert_adapter_dirs: train/experts_layout.h

// Routed generation: the router picks the expert from the prompt (its first `prefix_tokens` tokens, 0 =
// all of it), and the prompt is continued with that expert. `expert` (optional) receives it.
class Router;
class Tokenizer;
std::string generate_routed(RoutedModel& model, const Router& router, const Tokenizer& tokenizer,
                            const std::string& prompt, const GenerateOptions& opts, int prefix_tokens = 0,
                            int* expert = nullptr);

// `moin generate --route PARTITION --experts DIR`: loads the base, tokenizer and router, routes the prompt,
// generates with that expert. The tokenizer defaults to the partition's.
std::string run_generate_routed(const GenerateRunOptions& opts, const std::string& partition_dir,
                                const std::string& experts_dir, int prefix_tokens);
}  // namespace moin
