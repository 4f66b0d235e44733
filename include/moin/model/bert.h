// A BERT-family encoder (BERT, MiniLM, all-MiniLM-L6-v2, bge, e5 ...), the forward pass in plain LibTorch:
//
//   x = LayerNorm(word[ids] + position[0..T) + token_type[0])
//   per layer (post-norm):
//     a = softmax(Q K^T / sqrt(d) + padding mask) V        (multi-head self-attention)
//     x = LayerNorm(x + a W_o)
//     x = LayerNorm(x + GELU_erf(x W_1) W_2)
//
// Weights come from a Hugging Face folder: config.json + model.safetensors. Tensor names with or without
// the "bert." prefix are accepted; every shape is checked against config.json.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace moin {

struct BertConfig {
  std::int64_t vocab_size = 30522;
  std::int64_t hidden_size = 768;
  std::int64_t num_layers = 12;
  std::int64_t num_heads = 12;
  std::int64_t intermediate_size = 3072;
  std::int64_t max_position_embeddings = 512;
  std::int64_t type_vocab_size = 2;
  double layer_norm_eps = 1e-12;

  // Reads a Hugging Face config.json; UserError naming the file for a missing key, a non-BERT
  // architecture (position_embedding_type other than "absolute", hidden_act other than "gelu") or
  // inconsistent sizes.
  static BertConfig from_json_file(const std::string& path);
};

struct BertLayer {
  torch::Tensor q_w, q_b, k_w, k_b, v_w, v_b;  // [H, H], [H]
  torch::Tensor o_w, o_b, ln1_w, ln1_b;        // attention output projection, its LayerNorm
  torch::Tensor ff1_w, ff1_b, ff2_w, ff2_b;    // [I, H], [I], [H, I], [H]
  torch::Tensor ln2_w, ln2_b;
};

class BertModel {
 public:
  // Loads config.json and model.safetensors from `dir` onto `device`. UserError naming the file (and
  // tensor) for a missing file, a missing tensor or a shape that disagrees with config.json.
  static BertModel load(const std::string& dir, torch::Device device = torch::kCPU);

  // ids, mask: [B, T] int64 (mask 1 for real tokens, 0 for padding). Returns the last hidden states
  // [B, T, H] (float32). Runs without autograd.
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& mask) const;

  const BertConfig& config() const { return config_; }
  torch::Device device() const { return word_emb_.device(); }

 private:
  BertConfig config_;
  torch::Tensor word_emb_, pos_emb_, type_emb_, emb_ln_w_, emb_ln_b_;
  std::vector<BertLayer> layers_;
};

}  // namespace moin
