// The Llama-family decoder (Llama 2/3/3.x, TinyLlama, SmolLM, Mistral, Qwen2/2.5, Qwen3, llama2.c's
// TinyStories models), in LibTorch modules whose names mirror Hugging Face's LlamaForCausalLM, so a
// checkpoint's tensor names map one to one onto parameters (model.layers.3.self_attn.q_proj.weight, ...).
//
//   h = embed(tokens)
//   for each layer:  h = h + o_proj(attention(rope(q_proj(norm(h))), rope(k_proj(norm(h))), v_proj(norm(h))))
//                    h = h + down_proj(silu(gate_proj(norm(h))) * up_proj(norm(h)))
//   logits = lm_head(norm(h))          (lm_head = embed_tokens.weight when the embeddings are tied)
//
// The family's variants are fields of LlamaConfig, not classes (nanoGPT's `bias` flag): q/k/v biases
// (Qwen2), a sliding attention window (Mistral), RMSNorm of each query and key head (Qwen3), RoPE
// frequency scaling (Llama 3.1's "llama3", "linear").
//
// Conventions (those of Hugging Face transformers): RoPE rotates the two halves of each head
// (rotate_half), cos/sin computed in float32; RMSNorm normalises in float32 and casts back before the
// weight; grouped-query attention shares each key/value head among n_heads / n_kv_heads query heads.
// Every projection is a moin::Linear; a forward call may name LoRA adapters for it (model/lora_routing.h).
#pragma once
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "moin/model/linear.h"

namespace moin {

// RoPE frequency scaling, transformers' rope_parameters / rope_scaling: "default" (none), "linear" (every
// frequency divided by factor) or "llama3" (Llama 3.1: long wavelengths divided by factor, short ones kept,
// a smooth blend between). Other types (yarn, dynamic, longrope) are refused.
struct RopeScaling {
  std::string rope_type = "default";
  double factor = 1.0;            // linear, llama3
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  std::int64_t original_max_position_embeddings = 0;  // llama3: the pre-training context (0: max_position_embeddings)

  template <class V> void visit(V& v) {
    v("rope_type", rope_type, "default, linear or llama3");
    v("factor", factor, "linear, llama3: how much longer the context is than in pre-training");
    v("low_freq_factor", low_freq_factor, "llama3: wavelengths above original/low_freq_factor are divided by factor");
    v("high_freq_factor", high_freq_factor, "llama3: wavelengths below original/high_freq_factor are kept");
    v("original_max_position_embeddings", original_max_position_embeddings,
      "llama3: context length of pre-training (0: max_position_embeddings)");
  }
};

// The architecture, as in Hugging Face's config.json (LlamaConfig, MistralConfig, Qwen2Config,
// Qwen3Config). Field names are the JSON keys.
struct LlamaConfig {
  std::string model_type = "llama";  // llama, mistral, qwen2, qwen3
  std::int64_t vocab_size = 32000;
  std::int64_t hidden_size = 4096;
  std::int64_t intermediate_size = 11008;
  std::int64_t num_hidden_layers = 32;
  std::int64_t num_attention_heads = 32;
  std::int64_t num_key_value_heads = 32;
  std::int64_t head_dim = 0;  // 0: hidden_size / num_attention_heads
  std::int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  std::int64_t bos_token_id = 1;  // -1 when the config has none
  std::int64_t eos_token_id = 2;
  std::string torch_dtype = "float32";  // the dtype the weights are stored in (float32, bfloat16, float16)
  bool attention_bias = false;      // llama, qwen3: a bias on q/k/v/o_proj (qwen2 has q/k/v biases always)
  bool mlp_bias = false;            // llama: a bias on gate/up/down_proj
  std::int64_t sliding_window = 0;  // mistral: each query sees itself and the sliding_window - 1 keys before (0: all)
  RopeScaling rope_scaling;

  template <class V> void visit(V& v) {
    v("model_type", model_type, "llama, mistral, qwen2 (q/k/v biases) or qwen3 (RMSNorm on query and key heads)");
    v("vocab_size", vocab_size, "number of tokens of the vocabulary");
    v("hidden_size", hidden_size, "width of the residual stream");
    v("intermediate_size", intermediate_size, "width of the SwiGLU MLP");
    v("num_hidden_layers", num_hidden_layers, "number of decoder layers");
    v("num_attention_heads", num_attention_heads, "query heads");
    v("num_key_value_heads", num_key_value_heads, "key/value heads (grouped-query attention; divides the query heads)");
    v("head_dim", head_dim, "width of one head (0: hidden_size / num_attention_heads)");
    v("max_position_embeddings", max_position_embeddings, "longest sequence the model is meant for");
    v("rms_norm_eps", rms_norm_eps, "epsilon of RMSNorm");
    v("rope_theta", rope_theta, "RoPE base frequency");
    v("tie_word_embeddings", tie_word_embeddings, "the output head reuses the token embedding matrix");
    v("bos_token_id", bos_token_id, "beginning-of-sequence token (-1: none)");
    v("eos_token_id", eos_token_id, "end-of-sequence token (-1: none)");
    v("torch_dtype", torch_dtype, "dtype of the stored weights: float32, bfloat16 or float16");
    v("attention_bias", attention_bias, "llama, qwen3: a bias on q_proj, k_proj, v_proj and o_proj");
    v("mlp_bias", mlp_bias, "llama: a bias on gate_proj, up_proj and down_proj");
    v("sliding_window", sliding_window,
      "mistral: each query attends to itself and the sliding_window - 1 positions before it (0: no window)");
    v("rope_scaling", rope_scaling, "RoPE frequency scaling (rope_type default, linear or llama3)");
  }

  std::int64_t dim_head() const { return head_dim > 0 ? head_dim : hidden_size / num_attention_heads; }
  // Which projections carry a bias: Qwen2's q/k/v always; attention_bias puts one on q/k/v/o (as transformers).
  bool qkv_bias() const { return attention_bias || model_type == "qwen2"; }
  bool o_bias() const { return attention_bias; }
  bool qk_norm() const { return model_type == "qwen3"; }  // RMSNorm over each query and key head, before RoPE
  std::int64_t num_parameters() const;  // total count (embedding counted once when tied)

  // UserError "<source>: ..." on any inconsistency (non-positive sizes, heads not dividing, ...).
  void validate(const std::string& source = "config") const;

  // From a Hugging Face config.json object of model_type llama, mistral, qwen2 or qwen3. Every key must be
  // one moin reads or one that cannot change the forward pass (transformers_version, use_cache, ...): any
  // other key, another model_type or architecture, an unsupported rope type, activation or value is a
  // UserError naming `source` and the key. Defaults of absent keys are those of the type's transformers
  // config class. Accepts transformers 4 (rope_theta, rope_scaling, torch_dtype) and 5 (rope_parameters,
  // dtype) layouts.
  static LlamaConfig from_json(const nlohmann::json& j, const std::string& source);
  // A config.json transformers loads as <Type>ForCausalLM (writes both the 4.x and 5.x key spellings).
  nlohmann::json to_json() const;

  // `path` is a config.json file or a folder holding one.
  static LlamaConfig load(const std::string& path);
  void save(const std::string& path) const;  // atomically
};

// Keys and values already seen, per layer: [batch, n_kv_heads, length, head_dim]. Generation feeds the
// prompt once, then one token at a time; positions continue from length().
struct KVCache {
  std::vector<torch::Tensor> keys, values;
  std::int64_t length() const { return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2); }
  void clear() { keys.clear(); values.clear(); }
};

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(std::int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// RoPE's inverse frequencies [head_dim / 2], float32, with the config's rope_scaling applied: the same
// float32 expressions as transformers' ROPE_INIT_FUNCTIONS, so the tables agree bit for bit on the CPU.
torch::Tensor rope_inv_freq(const LlamaConfig& c, torch::Device device);
// cos and sin of RoPE for positions [offset, offset + length), [length, 2 * inv_freq.size(0)], float32.
std::pair<torch::Tensor, torch::Tensor> rope_cos_sin(const torch::Tensor& inv_freq, std::int64_t offset,
                                                     std::int64_t length);
// The same without rope scaling (the frequencies 1 / theta^(2i / head_dim)).
std::pair<torch::Tensor, torch::Tensor> rope_cos_sin(std::int64_t head_dim, double theta, std::int64_t offset,
                                                     std::int64_t length, torch::Device device);
// x: [batch, heads, T, head_dim]; rotates halves: x * cos + rotate_half(x) * sin (in x's dtype).
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  explicit LlamaAttentionImpl(const LlamaConfig& c);
  // x [B, T, hidden]; cos/sin for the T positions; cache_k/cache_v (may be null) extended in place.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        torch::Tensor* cache_k = nullptr, torch::Tensor* cache_v = nullptr,
                        const LoraRouting* lora = nullptr);
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  RMSNorm q_norm{nullptr}, k_norm{nullptr};  // qwen3 only: over each head, before RoPE
  std::int64_t n_heads, n_kv_heads, head_dim;
  std::int64_t sliding_window;  // 0: plain causal attention
};
TORCH_MODULE(LlamaAttention);

class LlamaMLPImpl : public torch::nn::Module {
 public:
  explicit LlamaMLPImpl(const LlamaConfig& c);
  // down_proj(silu(gate_proj(x)) * up_proj(x))
  torch::Tensor forward(const torch::Tensor& x, const LoraRouting* lora = nullptr);
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(LlamaMLP);

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  explicit LlamaDecoderLayerImpl(const LlamaConfig& c);
  torch::Tensor forward(const torch::Tensor& h, const torch::Tensor& cos, const torch::Tensor& sin,
                        torch::Tensor* cache_k = nullptr, torch::Tensor* cache_v = nullptr,
                        const LoraRouting* lora = nullptr);
  LlamaAttention self_attn{nullptr};
  LlamaMLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  std::int64_t index = 0;  // position in the stack (what a layer router is told)
};
TORCH_MODULE(LlamaDecoderLayer);

// Hugging Face's LlamaModel: the part named "model." in checkpoints.
class LlamaModelImpl : public torch::nn::Module {
 public:
  explicit LlamaModelImpl(const LlamaConfig& c);
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaModel);

class LlamaForCausalLMImpl : public torch::nn::Module {
 public:
  explicit LlamaForCausalLMImpl(const LlamaConfig& c);

  // tokens [B, T] int64 -> logits [B, T, vocab] in the model's dtype. With a cache, the tokens continue
  // the cached sequence (positions cache->length() ...) and the cache is extended. `lora` names the LoRA
  // adapters this call uses, per row or per token (model/lora_routing.h); null: the bare base.
  torch::Tensor forward(const torch::Tensor& tokens, KVCache* cache = nullptr, const LoraRouting* lora = nullptr);
  // The final hidden states (after the last RMSNorm), [B, T, hidden]; head() turns them into logits.
  // Split so a trainer can compute the loss in chunks without materialising [B, T, vocab] at once.
  torch::Tensor final_hidden(const torch::Tensor& tokens, KVCache* cache = nullptr, const LoraRouting* lora = nullptr);
  torch::Tensor head(const torch::Tensor& hidden);

  // Hugging Face's output_hidden_states[layer]: 0 = the token embeddings, i = the output of decoder layer
  // i (1-based), num_hidden_layers = after the final RMSNorm. Negative counts from the end (-1 = last).
  // Runs only the layers needed. [B, T, hidden].
  torch::Tensor hidden_states(const torch::Tensor& tokens, std::int64_t layer);

  // Every projection by its Hugging Face module name, in checkpoint order (projection i has lora_slot i):
  // ("model.layers.0.self_attn.q_proj", q), k_proj, v_proj, o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj.
  std::vector<std::pair<std::string, Linear>> linears();

  // Freezes (false) or unfreezes every base parameter. Adapter tensors are not parameters of the model.
  void set_requires_grad(bool requires_grad);
  // Hugging Face's initialisation: normal(0, std) for embeddings and projections, ones for norms.
  void init_weights(std::uint64_t seed, double std = 0.02);

  torch::Device device() const;
  torch::Dtype dtype() const;

  // The tensors of a Hugging Face checkpoint by name (no lm_head.weight when tied), sharing storage.
  std::vector<std::pair<std::string, torch::Tensor>> state_tensors();

  LlamaConfig config;
  LlamaModel model{nullptr};
  Linear lm_head{nullptr};  // null when tie_word_embeddings
};
TORCH_MODULE(LlamaForCausalLM);

// Mean cross-entropy over positions whose target != ignore_index, computed in float32.
// logits [..., V] and targets [...] are aligned (the caller shifts: targets = tokens[:, 1:]).
torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                            std::int64_t ignore_index = -100);

// "float32"/"fp32", "bfloat16"/"bf16", "float16"/"fp16"/"half"; UserError otherwise.
torch::Dtype parse_dtype(const std::string& name);
std::string dtype_name(torch::Dtype dtype);  // "float32", "bfloat16", "float16"
// "cpu", "cuda", "cuda:N", or "auto" (CUDA when available); UserError otherwise.
torch::Device parse_device(const std::string& name);

}  // namespace moin
