// Routed inference: the base model is loaded once and stays frozen on the device; expert adapters come
// and go. An LRU cache keeps up to `cache_size` adapters on the device, loading misses from disk (PEFT
// folders) and counting hits, misses and load time. Activating an expert only points the base model's
// LoRA slots at that adapter's tensors (no copies, no merges), so a swap costs nothing once it is cached;
// callers that serve many queries group them by expert so that misses stay rare.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "moin/model/generate.h"
#include "moin/model/llama.h"
#include "moin/route/lru_cache.h"

namespace moin {

class LoraAdapter;

class RoutedModel {
 public:
  // adapter_dirs[i] is adapter i (PEFT layout); none is read until it is first activated.
  RoutedModel(LlamaForCausalLM base, std::vector<std::string> adapter_dirs, int cache_size = 4);
  ~RoutedModel();
  RoutedModel(const RoutedModel&) = delete;  // the cache's loader refers to this object
  RoutedModel& operator=(const RoutedModel&) = delete;

  // Attaches adapter i (loading it on a miss), or detaches every adapter for i = -1 (the bare base).
  void activate(int adapter);
  int active() const { return active_; }
  int num_adapters() const { return static_cast<int>(dirs_.size()); }
  LlamaForCausalLM& model() { return base_; }
  const CacheStats& cache_stats() const { return cache_.stats(); }
  const LruCache<std::shared_ptr<LoraAdapter>>& cache() const { return cache_; }

 private:
  LlamaForCausalLM base_;
  std::vector<std::string> dirs_;
  LruCache<std::shared_ptr<LoraAdapter>> cache_;
  int active_ = -1;
};

// The adapter folder of each expert 0..k-1 under `experts_dir`: EXPERTS/<k>, or the layouts
// EXPERTS/expert_<k> / EXPERTS/expert-<k> / EXPERTS/cluster_<k> when those exist. UserError naming the
// first expert whose folder is missing (no adapter_config.json).
std::vector<std::string> expert_adapter_dirs(const std::string& experts_dir, int k);

// Routed generation: the router picks the expert from the prompt (its first `prefix_tokens` tokens, 0 =
// all of it), that expert is activated, and the prompt is continued. `expert` (optional) receives it.
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
