// The BERT encoder forward pass and its loading (see include/moin/model/bert.h).
#include "moin/model/bert.h"

#include <torch/torch.h>

#include <filesystem>

#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "moin/model/safetensors_torch.h"

namespace moin {

namespace stdfs = std::filesystem;

BertConfig BertConfig::from_json_file(const std::string& path) {
  auto j = fs::read_json(path);
  BertConfig c;
  auto get_int = [&](const char* key, std::int64_t& field, bool required) {
    if (!j.contains(key)) {
      if (required) throw UserError(path + ": key \"" + key + "\" missing");
      return;
    }
    if (!j[key].is_number_integer() || j[key].get<std::int64_t>() <= 0)
      throw UserError(path + ": \"" + key + "\" must be a positive integer");
    field = j[key].get<std::int64_t>();
  };
  get_int("vocab_size", c.vocab_size, true);
  get_int("hidden_size", c.hidden_size, true);
  get_int("num_hidden_layers", c.num_layers, true);
  get_int("num_attention_heads", c.num_heads, true);
  get_int("intermediate_size", c.intermediate_size, true);
  get_int("max_position_embeddings", c.max_position_embeddings, true);
  get_int("type_vocab_size", c.type_vocab_size, false);
  if (j.contains("layer_norm_eps") && j["layer_norm_eps"].is_number()) c.layer_norm_eps = j["layer_norm_eps"].get<double>();
  std::string act = j.value("hidden_act", "gelu");
  if (act != "gelu")
    throw UserError(path + ": hidden_act \"" + act + "\" is not supported (only BERT's erf GELU, \"gelu\")");
  std::string pos = j.value("position_embedding_type", "absolute");
  if (pos != "absolute")
    throw UserError(path + ": position_embedding_type \"" + pos + "\" is not supported (only \"absolute\")");
  if (c.hidden_size % c.num_heads != 0)
    throw UserError(path + ": hidden_size " + std::to_string(c.hidden_size) + " is not a multiple of num_attention_heads " +
                    std::to_string(c.num_heads));
  return c;
}

namespace {

// The tensors of one safetensors file, found with or without the "bert." prefix, shape-checked.
struct Weights {
  std::string path;
  std::map<std::string, torch::Tensor> all;
  std::string prefix;

  torch::Tensor get(const std::string& name, std::vector<std::int64_t> shape, torch::Device device) const {
    auto it = all.find(prefix + name);
    if (it == all.end()) throw UserError(path + ": tensor " + prefix + name + " missing");
    const torch::Tensor& t = it->second;
    if (t.sizes().vec() != shape)
      throw UserError(path + ": tensor " + prefix + name + " has shape " + c10::str(t.sizes()) + ", config.json implies " +
                      c10::str(torch::IntArrayRef(shape)));
    if (!t.is_floating_point())
      throw UserError(path + ": tensor " + prefix + name + " is not floating point");
    return t.to(device, torch::kFloat32).contiguous();
  }
};

}  // namespace

BertModel BertModel::load(const std::string& dir, torch::Device device) {
  stdfs::path d(dir);
  require(stdfs::is_directory(d), dir + ": not a folder (expected a BERT / sentence-transformers model folder)");
  BertConfig c = BertConfig::from_json_file((d / "config.json").string());
  stdfs::path st_path = d / "model.safetensors";
  if (!stdfs::exists(st_path)) {
    if (stdfs::exists(d / "pytorch_model.bin"))
      throw UserError(st_path.string() + ": missing; the folder only has pytorch_model.bin, which moin does not read "
                      "(convert it: python -c \"from transformers import AutoModel; AutoModel.from_pretrained('" +
                      dir + "').save_pretrained('" + dir + "', safe_serialization=True)\")");
    throw UserError(st_path.string() + ": missing (a BERT model folder has model.safetensors)");
  }
  Weights w{st_path.string(), st::load(st_path.string()), ""};
  if (!w.all.count("embeddings.word_embeddings.weight") && w.all.count("bert.embeddings.word_embeddings.weight"))
    w.prefix = "bert.";

  const std::int64_t H = c.hidden_size, I = c.intermediate_size;
  BertModel m;
  m.config_ = c;
  m.word_emb_ = w.get("embeddings.word_embeddings.weight", {c.vocab_size, H}, device);
  m.pos_emb_ = w.get("embeddings.position_embeddings.weight", {c.max_position_embeddings, H}, device);
  m.type_emb_ = w.get("embeddings.token_type_embeddings.weight", {c.type_vocab_size, H}, device);
  m.emb_ln_w_ = w.get("embeddings.LayerNorm.weight", {H}, device);
  m.emb_ln_b_ = w.get("embeddings.LayerNorm.bias", {H}, device);
  for (std::int64_t l = 0; l < c.num_layers; ++l) {
    std::string p = "encoder.layer." + std::to_string(l) + ".";
    BertLayer L;
    L.q_w = w.get(p + "attention.self.query.weight", {H, H}, device);
    L.q_b = w.get(p + "attention.self.query.bias", {H}, device);
    L.k_w = w.get(p + "attention.self.key.weight", {H, H}, device);
    L.k_b = w.get(p + "attention.self.key.bias", {H}, device);
    L.v_w = w.get(p + "attention.self.value.weight", {H, H}, device);
    L.v_b = w.get(p + "attention.self.value.bias", {H}, device);
    L.o_w = w.get(p + "attention.output.dense.weight", {H, H}, device);
    L.o_b = w.get(p + "attention.output.dense.bias", {H}, device);
    L.ln1_w = w.get(p + "attention.output.LayerNorm.weight", {H}, device);
    L.ln1_b = w.get(p + "attention.output.LayerNorm.bias", {H}, device);
    L.ff1_w = w.get(p + "intermediate.dense.weight", {I, H}, device);
    L.ff1_b = w.get(p + "intermediate.dense.bias", {I}, device);
    L.ff2_w = w.get(p + "output.dense.weight", {H, I}, device);
    L.ff2_b = w.get(p + "output.dense.bias", {H}, device);
    L.ln2_w = w.get(p + "output.LayerNorm.weight", {H}, device);
    L.ln2_b = w.get(p + "output.LayerNorm.bias", {H}, device);
    m.layers_.push_back(std::move(L));
  }
  return m;
}

torch::Tensor BertModel::forward(const torch::Tensor& ids_in, const torch::Tensor& mask_in) const {
  torch::NoGradGuard no_grad;
  const auto& c = config_;
  TORCH_CHECK(ids_in.dim() == 2 && ids_in.sizes() == mask_in.sizes(), "BertModel::forward: ids and mask must be [B, T]");
  const std::int64_t B = ids_in.size(0), T = ids_in.size(1), H = c.hidden_size, nh = c.num_heads, hd = H / nh;
  TORCH_CHECK(T <= c.max_position_embeddings, "BertModel::forward: sequence longer than max_position_embeddings");
  torch::Tensor ids = ids_in.to(device(), torch::kLong);
  torch::Tensor mask = mask_in.to(device());

  // Embeddings: word + absolute position + token type 0 (one segment).
  torch::Tensor x = word_emb_.index_select(0, ids.reshape(-1)).view({B, T, H});
  x = x + pos_emb_.slice(0, 0, T).unsqueeze(0) + type_emb_[0];
  x = torch::layer_norm(x, {H}, emb_ln_w_, emb_ln_b_, c.layer_norm_eps);

  // Padding keys get no attention: a boolean mask [B, 1, 1, T], true where attending is allowed.
  torch::Tensor attend = mask.to(torch::kBool).view({B, 1, 1, T});
  for (const auto& L : layers_) {
    auto heads = [&](const torch::Tensor& t) { return t.view({B, T, nh, hd}).transpose(1, 2); };  // [B, nh, T, hd]
    torch::Tensor q = heads(torch::linear(x, L.q_w, L.q_b));
    torch::Tensor k = heads(torch::linear(x, L.k_w, L.k_b));
    torch::Tensor v = heads(torch::linear(x, L.v_w, L.v_b));
    // softmax(q k^T / sqrt(hd) + mask) v
    torch::Tensor a = at::scaled_dot_product_attention(q, k, v, attend);
    a = a.transpose(1, 2).reshape({B, T, H});
    x = torch::layer_norm(x + torch::linear(a, L.o_w, L.o_b), {H}, L.ln1_w, L.ln1_b, c.layer_norm_eps);
    torch::Tensor h = torch::gelu(torch::linear(x, L.ff1_w, L.ff1_b));  // exact (erf) GELU
    x = torch::layer_norm(x + torch::linear(h, L.ff2_w, L.ff2_b), {H}, L.ln2_w, L.ln2_b, c.layer_norm_eps);
  }
  return x;
}

}  // namespace moin
