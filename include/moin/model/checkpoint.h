// Hugging Face checkpoints of Llama models: a folder with config.json and the weights, either one
// model.safetensors or shards listed in model.safetensors.index.json. Tensor names are the module names
// of llama.h (model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight, ..., lm_head.weight).
// A tied model (tie_word_embeddings) has no lm_head.weight, as transformers writes it.
#pragma once
#include <torch/types.h>

#include <string>

#include "moin/model/llama.h"

namespace moin {

// A model of this architecture with its parameters allocated directly in `dtype` on `device` (no float32
// copy on the way), initialised with init_weights(seed).
LlamaForCausalLM make_llama(const LlamaConfig& config, torch::Dtype dtype = torch::kFloat32,
                            torch::Device device = torch::kCPU, std::uint64_t seed = 0, double init_std = 0.02);

// Loads `dir` (config.json + weights), converting the weights to `dtype` on `device`, in eval mode.
// UserError naming the file and tensor for a missing or unexpected tensor or a shape that does not match
// config.json. A tied checkpoint that carries lm_head.weight anyway is accepted when it equals the
// embeddings (some exporters write both).
LlamaForCausalLM load_llama(const std::string& dir, torch::Dtype dtype = torch::kFloat32,
                            torch::Device device = torch::kCPU);

// Copies the weights of a checkpoint folder (or a single .safetensors file) into an existing model, with
// the same checks as load_llama.
void load_llama_weights(LlamaForCausalLM& model, const std::string& path);

// huggingface_hub's default shard size (transformers 5 uses 50GB; either loads the other's shards).
constexpr std::uint64_t kDefaultMaxShardBytes = 5000000000ull;

// Writes the weights in the model's dtype (metadata {"format": "pt"}) and `dir`/config.json (torch_dtype
// set to that dtype), each file atomically; creates `dir`. Up to max_shard_bytes of tensors: one
// `dir`/model.safetensors; above, Hugging Face's shards model-00001-of-0000N.safetensors (split in tensor
// order, a new shard when the next tensor would pass the limit) and model.safetensors.index.json. Weight
// files of an earlier save that this one did not write are removed. Transformers loads the result with
// AutoModelForCausalLM.from_pretrained(dir).
void save_llama(LlamaForCausalLM& model, const std::string& dir, std::uint64_t max_shard_bytes = kDefaultMaxShardBytes);

// "5GB", "40KB", "2GiB", "1000" -> bytes, as transformers' max_shard_size (GB = 10^9, GiB = 2^30).
// UserError for anything else.
std::uint64_t parse_shard_size(const std::string& size);

// Options of `moin init-model`: a freshly initialised model (for pre-training from scratch and tests).
struct InitModelOptions {
  std::string output;  // checkpoint folder to write
  std::uint64_t seed = 0;
  std::string dtype = "float32";
  double init_std = 0.02;
  std::string max_shard_size = "5GB";
  LlamaConfig model = small_model();  // ~11M parameters unless configured

  // 11.0M parameters: vocab 4096, hidden 384, 6 layers, 6 heads of 64, 2 key/value heads, MLP 1024, tied.
  static LlamaConfig small_model() {
    LlamaConfig c;
    c.vocab_size = 4096;
    c.hidden_size = 384;
    c.intermediate_size = 1024;
    c.num_hidden_layers = 6;
    c.num_attention_heads = 6;
    c.num_key_value_heads = 2;
    c.max_position_embeddings = 1024;
    c.tie_word_embeddings = true;
    return c;
  }

  template <class V> void visit(V& v) {
    v("output", output, "folder to write the checkpoint to");
    v("seed", seed, "seed of the initialisation");
    v("dtype", dtype, "dtype of the weights: float32, bfloat16 or float16");
    v("init_std", init_std, "standard deviation of the normal initialisation of embeddings and projections");
    v("max_shard_size", max_shard_size, "weights above this size are split into shards (5GB, 40KB, 2GiB, ...)");
    v("model", model, "the architecture (Hugging Face config.json keys: model_type, sizes, biases, rope_scaling, ...)");
  }
  void validate() const;
};

// Writes a new model initialised as opts says.
void init_model(const InitModelOptions& opts);

// True when `dir` holds config.json and model.safetensors or model.safetensors.index.json.
bool is_llama_checkpoint(const std::string& dir);

}  // namespace moin
