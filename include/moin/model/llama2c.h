// Import of llama2.c checkpoints (Karpathy's llama2.c: run.c / export.py) into the Hugging Face layout.
//
// Two float32 formats are read:
//  - legacy (v0): 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative
//    vocab_size means an unshared classifier), then token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1,
//    w2, w3 (each for all layers), rms_final, freq_cis_real, freq_cis_imag (seq_len * head_size / 2 each,
//    skipped: RoPE is recomputed), and wcls when unshared.
//  - version 1: uint32 magic 0x616b3432 ("ak42"), int32 version 1, the same 7 int32 (vocab_size positive),
//    uint8 shared_classifier, zero padding to 256 bytes; then rms_att, rms_ffn, rms_final, token_embedding,
//    wq, wk, wv, wo, w1, w2, w3, and wcls when not shared.
// llama2.c applies RoPE to interleaved pairs (2i, 2i+1); Hugging Face rotates halves (i, i + head_dim/2).
// The rows of wq and wk are permuted on import (as transformers' convert_llama_weights_to_hf does), so
// both compute the same function. w1 -> gate_proj, w3 -> up_proj, w2 -> down_proj.
#pragma once
#include <string>

#include "moin/model/llama.h"

namespace moin {

// The model in float32 on the CPU. rms_norm_eps 1e-5, rope_theta 10000, bos 1, eos 2 (llama2.c's
// conventions); max_position_embeddings = seq_len. UserError naming the file when it is truncated, too
// long, of an unknown version (e.g. the int8 version 2) or its header is inconsistent.
LlamaForCausalLM read_llama2c(const std::string& path);

// The inverse permutation of the import, for tests: HF (rotate-halves) rows -> llama2.c interleaved rows.
// w: [n_heads * head_dim, in].
torch::Tensor rope_rows_to_interleaved(const torch::Tensor& w, std::int64_t n_heads);
torch::Tensor rope_rows_to_halves(const torch::Tensor& w, std::int64_t n_heads);

// Options of `moin convert llama2c`.
struct Llama2cConvertOptions {
  std::string input;      // llama2.c .bin
  std::string output;     // checkpoint folder to write
  std::string tokenizer;  // optional SentencePiece .model, copied to output/tokenizer.model
  std::string dtype = "float32";

  template <class V> void visit(V& v) {
    v("input", input, "llama2.c checkpoint (.bin, legacy or version 1, float32)");
    v("output", output, "folder to write the Hugging Face checkpoint to (config.json, model.safetensors)");
    v("tokenizer", tokenizer, "SentencePiece .model to copy into the folder as tokenizer.model (optional)");
    v("dtype", dtype, "dtype of the written weights: float32, bfloat16 or float16");
  }
  void validate() const;
};

// Reads opts.input and writes the Hugging Face layout to opts.output.
void convert_llama2c(const Llama2cConvertOptions& opts);

}  // namespace moin
