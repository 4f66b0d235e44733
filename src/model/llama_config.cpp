// LlamaConfig: validation and Hugging Face config.json in both transformers 4.x and 5.x spellings.
#include <filesystem>

#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "moin/model/llama.h"

namespace moin {

using json = nlohmann::json;

std::int64_t LlamaConfig::num_parameters() const {
  const std::int64_t hd = dim_head();
  const std::int64_t attn = hidden_size * num_attention_heads * hd * 2 + hidden_size * num_key_value_heads * hd * 2;
  const std::int64_t mlp = 3 * hidden_size * intermediate_size;
  const std::int64_t per_layer = attn + mlp + 2 * hidden_size;
  return vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * per_layer + hidden_size;
}

void LlamaConfig::validate(const std::string& source) const {
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

// bos/eos may be an integer, null, or (Llama 3) a list whose first entry we take.
std::int64_t get_token_id(const json& j, const char* key, std::int64_t fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  if (it->is_null()) return -1;
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) return (*it)[0].get<std::int64_t>();
  if (it->is_number_integer()) return it->get<std::int64_t>();
  throw UserError(source + ": " + key + " must be an integer (got " + it->dump() + ")");
}

}  // namespace

LlamaConfig LlamaConfig::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw UserError(source + ": must hold a JSON object");
  if (j.contains("model_type") && j["model_type"] != "llama")
    throw UserError(source + ": model_type is " + j["model_type"].dump() + ", only \"llama\" is supported");
  if (j.contains("architectures") && j["architectures"].is_array()) {
    for (const auto& a : j["architectures"])
      if (a != "LlamaForCausalLM")
        throw UserError(source + ": architecture " + a.dump() + " is not supported (LlamaForCausalLM only)");
  }
  if (j.contains("hidden_act") && j["hidden_act"] != "silu")
    throw UserError(source + ": hidden_act " + j["hidden_act"].dump() + " is not supported (silu only)");
  for (const char* key : {"attention_bias", "mlp_bias"})
    if (j.contains(key) && j[key] == true) throw UserError(source + ": " + key + " = true is not supported");
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    throw UserError(source + ": rope_scaling " + j["rope_scaling"].dump() + " is not supported");
  if (j.contains("pretraining_tp") && j["pretraining_tp"].is_number_integer() && j["pretraining_tp"] != 1)
    throw UserError(source + ": pretraining_tp must be 1");

  LlamaConfig c;
  c.vocab_size = get_int(j, "vocab_size", c.vocab_size, source);
  c.hidden_size = get_int(j, "hidden_size", c.hidden_size, source);
  c.intermediate_size = get_int(j, "intermediate_size", c.intermediate_size, source);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", c.num_hidden_layers, source);
  c.num_attention_heads = get_int(j, "num_attention_heads", c.num_attention_heads, source);
  // transformers: num_key_value_heads defaults to num_attention_heads (plain multi-head attention).
  c.num_key_value_heads = get_int(j, "num_key_value_heads", c.num_attention_heads, source);
  c.head_dim = get_int(j, "head_dim", 0, source);
  if (c.num_attention_heads > 0 && c.head_dim == c.hidden_size / c.num_attention_heads &&
      c.hidden_size % c.num_attention_heads == 0)
    c.head_dim = 0;  // the derived value: keep the config minimal
  c.max_position_embeddings = get_int(j, "max_position_embeddings", c.max_position_embeddings, source);
  c.rms_norm_eps = get_number(j, "rms_norm_eps", 1e-6, source);  // transformers' default
  c.rope_theta = get_number(j, "rope_theta", c.rope_theta, source);
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    const auto& rp = j["rope_parameters"];
    if (rp.contains("rope_type") && rp["rope_type"] != "default")
      throw UserError(source + ": rope_parameters.rope_type " + rp["rope_type"].dump() + " is not supported");
    c.rope_theta = get_number(rp, "rope_theta", c.rope_theta, source + ": rope_parameters");
  }
  auto tie = j.find("tie_word_embeddings");
  if (tie != j.end() && !tie->is_null()) {
    if (!tie->is_boolean()) throw UserError(source + ": tie_word_embeddings must be true or false");
    c.tie_word_embeddings = tie->get<bool>();
  } else {
    c.tie_word_embeddings = true;  // PretrainedConfig's default
  }
  c.bos_token_id = get_token_id(j, "bos_token_id", c.bos_token_id, source);
  c.eos_token_id = get_token_id(j, "eos_token_id", c.eos_token_id, source);
  for (const char* key : {"dtype", "torch_dtype"}) {
    auto it = j.find(key);
    if (it != j.end() && it->is_string()) {
      c.torch_dtype = it->get<std::string>();
      break;
    }
  }
  c.validate(source);
  return c;
}

json LlamaConfig::to_json() const {
  json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = dim_head();
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  // transformers 4.x reads rope_theta, 5.x rope_parameters; both are written so either loads the model.
  j["rope_theta"] = rope_theta;
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", rope_theta}};
  j["rope_scaling"] = nullptr;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["bos_token_id"] = bos_token_id >= 0 ? json(bos_token_id) : json(nullptr);
  j["eos_token_id"] = eos_token_id >= 0 ? json(eos_token_id) : json(nullptr);
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["mlp_bias"] = false;
  j["pretraining_tp"] = 1;
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
