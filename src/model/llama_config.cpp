// LlamaConfig: validation and Hugging Face config.json in both transformers 4.x and 5.x spellings.
#include <algorithm>
#include <filesystem>
#include <set>
#include <vector>

#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "moin/model/llama.h"

namespace moin {

using json = nlohmann::json;

namespace {

const std::vector<std::string> kModelTypes = {"llama", "mistral", "qwen2", "qwen3"};

std::string model_types_list() {
  std::string out;
  for (const auto& t : kModelTypes) out += (out.empty() ? "" : ", ") + t;
  return out;
}

// Hugging Face's class names: architectures[0] and what transformers instantiates.
std::string architecture_of(const std::string& model_type) {
  if (model_type == "mistral") return "MistralForCausalLM";
  if (model_type == "qwen2") return "Qwen2ForCausalLM";
  if (model_type == "qwen3") return "Qwen3ForCausalLM";
  return "LlamaForCausalLM";
}

}  // namespace

std::int64_t LlamaConfig::num_parameters() const {
  const std::int64_t hd = dim_head();
  const std::int64_t q = num_attention_heads * hd, kv = num_key_value_heads * hd;
  std::int64_t attn = hidden_size * q * 2 + hidden_size * kv * 2;
  if (qkv_bias()) attn += q + 2 * kv;
  if (o_bias()) attn += hidden_size;
  if (qk_norm()) attn += 2 * hd;
  std::int64_t mlp = 3 * hidden_size * intermediate_size;
  if (mlp_bias) mlp += 2 * intermediate_size + hidden_size;
  const std::int64_t per_layer = attn + mlp + 2 * hidden_size;
  return vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * per_layer + hidden_size;
}

void LlamaConfig::validate(const std::string& source) const {
  require(std::find(kModelTypes.begin(), kModelTypes.end(), model_type) != kModelTypes.end(),
          source + ": model_type \"" + model_type + "\" is not supported (" + model_types_list() + ")");
  auto positive = [&](std::int64_t v, const char* key) {
    require(v > 0, source + ": " + key + " must be positive (got " + std::to_string(v) + ")");
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(num_attention_heads, "num_attention_heads");
  positive(num_key_value_heads, "num_key_value_heads");
  positive(max_position_embeddings, "max_position_embeddings");
  require(head_dim >= 0, source + ": head_dim must be positive or 0 (derived)");
  require(head_dim > 0 || hidden_size % num_attention_heads == 0,
          source + ": hidden_size " + std::to_string(hidden_size) + " is not a multiple of num_attention_heads " +
              std::to_string(num_attention_heads));
  require(dim_head() % 2 == 0, source + ": the head dimension " + std::to_string(dim_head()) +
                                   " must be even (RoPE rotates pairs)");
  require(num_attention_heads % num_key_value_heads == 0,
          source + ": num_attention_heads " + std::to_string(num_attention_heads) +
              " is not a multiple of num_key_value_heads " + std::to_string(num_key_value_heads));
  require(rms_norm_eps > 0, source + ": rms_norm_eps must be positive");
  require(rope_theta > 0, source + ": rope_theta must be positive");
  require(bos_token_id >= -1 && bos_token_id < vocab_size, source + ": bos_token_id outside the vocabulary");
  require(eos_token_id >= -1 && eos_token_id < vocab_size, source + ": eos_token_id outside the vocabulary");
  require(torch_dtype == "float32" || torch_dtype == "bfloat16" || torch_dtype == "float16",
          source + ": torch_dtype must be float32, bfloat16 or float16 (got \"" + torch_dtype + "\")");
  // Only the variants transformers' class for this model_type has, so whatever moin writes loads there.
  require(!attention_bias || model_type == "llama" || model_type == "qwen3",
          source + ": attention_bias is not a key of model_type \"" + model_type + "\" (llama and qwen3 have it; " +
              "qwen2 always has q/k/v biases)");
  require(!mlp_bias || model_type == "llama",
          source + ": mlp_bias is not a key of model_type \"" + model_type + "\" (llama only)");
  require(sliding_window >= 0, source + ": sliding_window must be positive or 0 (none)");
  require(sliding_window == 0 || model_type == "mistral",
          source + ": sliding_window is supported for model_type \"mistral\" only (got \"" + model_type + "\")");
  const auto& rs = rope_scaling;
  require(rs.rope_type == "default" || rs.rope_type == "linear" || rs.rope_type == "llama3",
          source + ": rope type \"" + rs.rope_type + "\" is not supported (default, linear, llama3)");
  if (rs.rope_type != "default") require(rs.factor > 0, source + ": rope factor must be positive");
  if (rs.rope_type == "llama3") {
    require(rs.low_freq_factor > 0 && rs.high_freq_factor > rs.low_freq_factor,
            source + ": llama3 rope needs 0 < low_freq_factor < high_freq_factor");
    require(rs.original_max_position_embeddings >= 0,
            source + ": original_max_position_embeddings must be positive or 0 (max_position_embeddings)");
  }
}

namespace {

std::int64_t get_int(const json& j, const char* key, std::int64_t fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) throw UserError(source + ": " + key + " must be an integer (got " + it->dump() + ")");
  return it->get<std::int64_t>();
}

double get_number(const json& j, const char* key, double fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) throw UserError(source + ": " + key + " must be a number (got " + it->dump() + ")");
  return it->get<double>();
}

bool get_bool(const json& j, const char* key, bool fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) throw UserError(source + ": " + key + " must be true or false (got " + it->dump() + ")");
  return it->get<bool>();
}

// bos/eos may be an integer, null, or (Llama 3) a list whose first entry we take.
std::int64_t get_token_id(const json& j, const char* key, std::int64_t fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  if (it->is_null()) return -1;
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) return (*it)[0].get<std::int64_t>();
  if (it->is_number_integer()) return it->get<std::int64_t>();
  throw UserError(source + ": " + key + " must be an integer (got " + it->dump() + ")");
}

// Keys that cannot change the forward pass: bookkeeping, generation defaults and the task fields every
// transformers 4.x / 5.x PretrainedConfig writes, and harmless markers seen in published configs.
const std::set<std::string> kIgnoredKeys = {
    "_name_or_path", "transformers_version", "use_cache", "initializer_range", "pad_token_id",
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16", "tf_legacy_loss",
    "pruned_heads", "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder", "cross_attention_hidden_size",
    "add_cross_attention", "tie_encoder_decoder", "max_length", "min_length", "do_sample", "early_stopping",
    "num_beams", "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p", "typical_p",
    "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
    "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens", "finetuning_task", "id2label", "label2id", "tokenizer_class", "prefix", "sep_token_id",
    "decoder_start_token_id", "task_specific_params", "problem_type", "_attn_implementation_autoset",
    "is_llama_config", "transformers.js_config"};

// The keys moin reads: those of the four transformers config classes that matter for the forward pass.
// A key of the family that a type's class ignores (sliding_window in a llama config, attention_bias: false in
// a mistral one) is read as transformers reads it: not at all; from_json refuses it only where it would ask
// for something this type's class cannot do (attention_bias: true in a mistral config).
const std::set<std::string> kModelKeys = {
    "model_type", "architectures", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps",
    "rope_theta", "rope_scaling", "rope_parameters", "tie_word_embeddings", "bos_token_id", "eos_token_id",
    "torch_dtype", "dtype", "hidden_act", "attention_dropout", "rope_interleaved", "attention_bias", "mlp_bias",
    "pretraining_tp", "sliding_window", "use_sliding_window", "max_window_layers", "layer_types"};

// rope_parameters (5.x, holds rope_theta) or rope_scaling (4.x, null or a dict): a non-null rope_scaling
// replaces rope_parameters whole, as transformers 5 reads them; `type` is the 4.x spelling of rope_type.
void read_rope(const json& j, LlamaConfig& c, const std::string& source) {
  json rope = json::object();
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_object()) throw UserError(source + ": " + key + " must be an object or null (got " + it->dump() + ")");
    for (const auto& [k, v] : it->items()) {
      static const std::set<std::string> known = {"rope_type", "type", "rope_theta", "factor", "low_freq_factor",
                                                  "high_freq_factor", "original_max_position_embeddings",
                                                  "partial_rotary_factor"};
      if (!known.count(k))
        throw UserError(source + ": " + key + "." + k + " is not supported (rope_type, rope_theta, factor, " +
                        "low_freq_factor, high_freq_factor, original_max_position_embeddings)");
    }
    rope = *it;
  }
  const std::string where = source + ": rope_parameters";
  std::string type = "default";
  for (const char* key : {"type", "rope_type"}) {  // rope_type wins, as in transformers
    if (!rope.contains(key)) continue;
    if (!rope[key].is_string()) throw UserError(where + "." + key + " must be a string (got " + rope[key].dump() + ")");
    type = rope[key].get<std::string>();
  }
  if (type != "default" && type != "linear" && type != "llama3")
    throw UserError(source + ": rope type \"" + type + "\" is not supported (default, linear, llama3)");
  if (get_number(rope, "partial_rotary_factor", 1.0, where) != 1.0)
    throw UserError(where + ".partial_rotary_factor " + rope["partial_rotary_factor"].dump() +
                    " is not supported (1 only)");
  c.rope_theta = get_number(rope, "rope_theta", get_number(j, "rope_theta", 10000.0, source), where);
  c.rope_scaling = RopeScaling{};
  c.rope_scaling.rope_type = type;
  if (type == "default") return;
  auto required = [&](const char* key) {
    if (!rope.contains(key)) throw UserError(where + " of type \"" + type + "\" needs " + key);
    return get_number(rope, key, 0.0, where);
  };
  c.rope_scaling.factor = required("factor");
  if (type == "llama3") {
    c.rope_scaling.low_freq_factor = required("low_freq_factor");
    c.rope_scaling.high_freq_factor = required("high_freq_factor");
    // transformers falls back to max_position_embeddings, as moin does for 0.
    c.rope_scaling.original_max_position_embeddings = get_int(rope, "original_max_position_embeddings", 0, where);
  }
}

}  // namespace

LlamaConfig LlamaConfig::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw UserError(source + ": must hold a JSON object");
  LlamaConfig c;
  if (j.contains("model_type")) {
    if (!j["model_type"].is_string() ||
        std::find(kModelTypes.begin(), kModelTypes.end(), j["model_type"].get<std::string>()) == kModelTypes.end())
      throw UserError(source + ": model_type " + j["model_type"].dump() + " is not supported (" + model_types_list() +
                      ")");
    c.model_type = j["model_type"].get<std::string>();
  }
  const std::string& type = c.model_type;
  for (const auto& [key, value] : j.items())
    if (!kModelKeys.count(key) && !kIgnoredKeys.count(key))
      throw UserError(source + ": key \"" + key + "\" is not supported (moin refuses what it cannot run; " +
                      "docs/model.md lists the keys)");
  if (j.contains("architectures") && j["architectures"].is_array()) {
    for (const auto& a : j["architectures"])
      if (a != architecture_of(type))
        throw UserError(source + ": architecture " + a.dump() + " is not supported for model_type \"" + type + "\" (" +
                        architecture_of(type) + " only)");
  }
  if (j.contains("hidden_act") && j["hidden_act"] != "silu")
    throw UserError(source + ": hidden_act " + j["hidden_act"].dump() + " is not supported (silu only)");
  if (get_number(j, "attention_dropout", 0.0, source) != 0.0)
    throw UserError(source + ": attention_dropout " + j["attention_dropout"].dump() + " is not supported (0 only)");
  if (get_bool(j, "rope_interleaved", false, source))
    throw UserError(source + ": rope_interleaved = true is not supported (transformers rotates halves)");
  if (get_int(j, "pretraining_tp", 1, source) != 1) throw UserError(source + ": pretraining_tp must be 1");
  if (get_bool(j, "attention_bias", false, source) && type != "llama" && type != "qwen3")
    throw UserError(source + ": attention_bias = true is not supported for model_type \"" + type +
                    "\" (llama and qwen3 have it; qwen2 always has q/k/v biases)");
  if (get_bool(j, "mlp_bias", false, source) && type != "llama")
    throw UserError(source + ": mlp_bias = true is not supported for model_type \"" + type + "\" (llama only)");
  if (get_bool(j, "use_sliding_window", false, source))
    throw UserError(source + ": use_sliding_window = true is not supported for model_type \"" + type +
                    "\" (per-layer windows; only mistral's window is)");
  if (j.contains("layer_types")) {
    if (!j["layer_types"].is_array()) throw UserError(source + ": layer_types must be a list");
    for (const auto& t : j["layer_types"])
      if (t != "full_attention")
        throw UserError(source + ": layer_types entry " + t.dump() + " is not supported (full_attention only)");
  }

  // Defaults of absent keys: those of the type's transformers config class.
  const bool qwen = type == "qwen2" || type == "qwen3";
  c.vocab_size = get_int(j, "vocab_size", c.vocab_size, source);
  c.hidden_size = get_int(j, "hidden_size", c.hidden_size, source);
  c.intermediate_size = get_int(j, "intermediate_size", c.intermediate_size, source);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", c.num_hidden_layers, source);
  c.num_attention_heads = get_int(j, "num_attention_heads", c.num_attention_heads, source);
  // transformers: num_key_value_heads defaults to num_attention_heads (plain multi-head attention).
  c.num_key_value_heads = get_int(j, "num_key_value_heads", c.num_attention_heads, source);
  c.head_dim = get_int(j, "head_dim", type == "qwen3" ? 128 : 0, source);
  if (c.num_attention_heads > 0 && c.head_dim == c.hidden_size / c.num_attention_heads &&
      c.hidden_size % c.num_attention_heads == 0)
    c.head_dim = 0;  // the derived value: keep the config minimal
  c.max_position_embeddings = get_int(j, "max_position_embeddings",
                                      type == "mistral" ? 131072 : qwen ? 32768 : c.max_position_embeddings, source);
  c.rms_norm_eps = get_number(j, "rms_norm_eps", 1e-6, source);  // transformers' default
  read_rope(j, c, source);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, source);  // the four classes' default
  c.bos_token_id = get_token_id(j, "bos_token_id", qwen ? -1 : c.bos_token_id, source);
  c.eos_token_id = get_token_id(j, "eos_token_id", qwen ? -1 : c.eos_token_id, source);
  for (const char* key : {"dtype", "torch_dtype"}) {
    auto it = j.find(key);
    if (it != j.end() && it->is_string()) {
      c.torch_dtype = it->get<std::string>();
      break;
    }
  }
  c.attention_bias = get_bool(j, "attention_bias", false, source);
  c.mlp_bias = get_bool(j, "mlp_bias", false, source);
  // Mistral's window applies whenever it is set (null, and moin's 0: none); qwen's only with
  // use_sliding_window (refused above); llama's class has none.
  if (type == "mistral") c.sliding_window = get_int(j, "sliding_window", j.contains("sliding_window") ? 0 : 4096, source);
  c.validate(source);
  return c;
}

json LlamaConfig::to_json() const {
  json j;
  j["architectures"] = {architecture_of(model_type)};
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = dim_head();
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  // transformers 4.x reads rope_theta and rope_scaling, 5.x rope_parameters; all are written so either
  // loads the model.
  j["rope_theta"] = rope_theta;
  json scaling = nullptr;
  if (rope_scaling.rope_type != "default") {
    scaling = {{"rope_type", rope_scaling.rope_type}, {"factor", rope_scaling.factor}};
    if (rope_scaling.rope_type == "llama3") {
      scaling["low_freq_factor"] = rope_scaling.low_freq_factor;
      scaling["high_freq_factor"] = rope_scaling.high_freq_factor;
      scaling["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings > 0
                                                        ? rope_scaling.original_max_position_embeddings
                                                        : max_position_embeddings;
    }
  }
  j["rope_parameters"] = scaling.is_null() ? json::object() : scaling;
  j["rope_parameters"]["rope_type"] = rope_scaling.rope_type;
  j["rope_parameters"]["rope_theta"] = rope_theta;
  j["rope_scaling"] = scaling;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["bos_token_id"] = bos_token_id >= 0 ? json(bos_token_id) : json(nullptr);
  j["eos_token_id"] = eos_token_id >= 0 ? json(eos_token_id) : json(nullptr);
  j["hidden_act"] = "silu";
  j["attention_dropout"] = 0.0;
  if (model_type == "llama") {
    j["attention_bias"] = attention_bias;
    j["mlp_bias"] = mlp_bias;
    j["pretraining_tp"] = 1;
  }
  if (model_type == "mistral") j["sliding_window"] = sliding_window > 0 ? json(sliding_window) : json(nullptr);
  if (model_type == "qwen2" || model_type == "qwen3") {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
  }
  if (model_type == "qwen3") j["attention_bias"] = attention_bias;
  j["initializer_range"] = 0.02;
  j["use_cache"] = true;
  j["torch_dtype"] = torch_dtype;
  j["dtype"] = torch_dtype;
  return j;
}

LlamaConfig LlamaConfig::load(const std::string& path) {
  std::filesystem::path p(path);
  if (std::filesystem::is_directory(p)) p /= "config.json";
  return from_json(fs::read_json(p), p.string());
}

void LlamaConfig::save(const std::string& path) const {
  std::filesystem::path p(path);
  if (std::filesystem::is_directory(p)) p /= "config.json";
  fs::write_json_atomic(p, to_json());
}

}  // namespace moin
