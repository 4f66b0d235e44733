// Text generation with a KV cache: the prompt is fed once, then one token per step. Greedy at
// temperature 0; otherwise softmax(logits / temperature), restricted to the smallest set of most likely
// tokens whose probability reaches top_p (nucleus sampling), drawn with a seeded generator on the CPU so a
// seed gives the same text on every device.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "moin/model/llama.h"

namespace moin {

class Tokenizer;

struct GenerateOptions {
  int max_new_tokens = 256;
  double temperature = 0.0;  // 0: greedy
  double top_p = 1.0;
  std::uint64_t seed = 0;
  bool use_cache = true;     // false: recompute the whole sequence each step (slow; for testing)
  bool stop_at_eos = true;
  // A model whose vocabulary is padded past its tokenizer (Qwen2's 151,936 rows for 151,665 tokens) can
  // still generate: ids the tokenizer cannot decode are never sampled. Off, such a pair is refused.
  bool mask_unused_ids = false;
  std::int64_t num_ids = 0;  // set by generate_text: sample only ids < num_ids (0: every row of the head)

  template <class V> void visit(V& v) {
    v("max_new_tokens", max_new_tokens, "tokens to generate at most");
    v("temperature", temperature, "sampling temperature (0: greedy)");
    v("top_p", top_p, "nucleus sampling: keep the most likely tokens up to this total probability (1: all)");
    v("seed", seed, "seed of the sampler");
    v("use_cache", use_cache, "reuse the keys and values of earlier tokens (false: recompute; for testing)");
    v("stop_at_eos", stop_at_eos, "stop when the model produces the end-of-sequence token");
    v("mask_unused_ids", mask_unused_ids, "never sample ids past the tokenizer's (for a model whose vocabulary is padded "
                                          "past its tokenizer); off: such a pair is refused");
  }
  void validate() const;
};

// Picks the next token from logits [V] (any dtype/device) with `opts`; `rng_state` advances.
std::int64_t sample_token(const torch::Tensor& logits, const GenerateOptions& opts, std::uint64_t& rng_state);

// Continues `prompt` (token ids, BOS included when wanted; not empty) and returns only the new tokens,
// ending with EOS when the model produced it (and stop_at_eos). Stops at max_new_tokens or when the
// sequence reaches max_position_embeddings. on_token, when set, sees each new token as it is produced.
// `lora`: the adapters every step uses (null: the bare base).
std::vector<std::int64_t> generate(LlamaForCausalLM& model, const std::vector<std::int64_t>& prompt,
                                   const GenerateOptions& opts,
                                   const std::function<void(std::int64_t)>& on_token = nullptr,
                                   const LoraRouting* lora = nullptr);

// BOS + tokenizer.encode(prompt) -> generate -> decoded new text (without EOS).
std::string generate_text(LlamaForCausalLM& model, const Tokenizer& tokenizer, const std::string& prompt,
                          const GenerateOptions& opts, const LoraRouting* lora = nullptr);

// Options of `moin generate`: which model, tokenizer and adapter, the prompt, and the sampling.
struct GenerateRunOptions {
  std::string model;      // checkpoint folder
  std::string tokenizer;  // .model or tokenizer.json ("" : MODEL/tokenizer.model or MODEL/tokenizer.json)
  std::string adapter;    // LoRA adapter folder (PEFT layout), optional
  std::string prompt;
  std::string dtype = "float32";
  std::string device = "auto";
  GenerateOptions generation;

  template <class V> void visit(V& v) {
    v("model", model, "checkpoint folder (config.json + model.safetensors)");
    v("tokenizer", tokenizer, "SentencePiece .model or tokenizer.json (empty: MODEL/tokenizer.model, else MODEL/tokenizer.json)");
    v("adapter", adapter, "LoRA adapter folder (PEFT layout) to apply, optional");
    v("prompt", prompt, "text to continue (BOS is prepended)");
    v("dtype", dtype, "compute dtype: float32, bfloat16 or float16");
    v("device", device, "cpu, cuda, cuda:N or auto");
    v("generation", generation, "sampling");
  }
  void validate() const;
};

// Loads everything opts names and returns the generated text.
std::string run_generate(const GenerateRunOptions& opts);

}  // namespace moin
