// llama2.c checkpoints -> LlamaForCausalLM (see llama2c.h for both layouts).
#include "moin/model/llama2c.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "moin/model/checkpoint.h"

namespace moin {

torch::Tensor rope_rows_to_halves(const torch::Tensor& w, std::int64_t n_heads) {
  const auto rows = w.size(0), in = w.size(1);
  // Row 2i of a head (interleaved) becomes row i, row 2i+1 becomes row i + head_dim/2.
  return w.reshape({n_heads, rows / n_heads / 2, 2, in}).transpose(1, 2).reshape({rows, in});
}

torch::Tensor rope_rows_to_interleaved(const torch::Tensor& w, std::int64_t n_heads) {
  const auto rows = w.size(0), in = w.size(1);
  return w.reshape({n_heads, 2, rows / n_heads / 2, in}).transpose(1, 2).reshape({rows, in});
}

namespace {

// Reads consecutive float32 arrays from the file's bytes, checking every read stays inside.
struct Reader {
  const std::string& path;
  const std::vector<char>& bytes;
  std::size_t pos;

  torch::Tensor take(std::vector<std::int64_t> shape, const char* what) {
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    const auto nbytes = static_cast<std::size_t>(n) * sizeof(float);
    if (pos + nbytes > bytes.size())
      throw UserError(path + ": truncated (" + std::to_string(bytes.size()) + " bytes) while reading " + what);
    auto t = torch::empty(shape, torch::kFloat32);
    std::memcpy(t.data_ptr<float>(), bytes.data() + pos, nbytes);
    pos += nbytes;
    return t;
  }
  void skip(std::int64_t floats, const char* what) {
    const auto nbytes = static_cast<std::size_t>(floats) * sizeof(float);
    if (pos + nbytes > bytes.size())
      throw UserError(path + ": truncated (" + std::to_string(bytes.size()) + " bytes) while reading " + what);
    pos += nbytes;
  }
};

}  // namespace

LlamaForCausalLM read_llama2c(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(path + ": cannot open (a llama2.c checkpoint .bin is expected)");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < 7 * 4) throw UserError(path + ": too short to be a llama2.c checkpoint");

  auto i32 = [&](std::size_t off) {
    std::int32_t v;
    std::memcpy(&v, bytes.data() + off, 4);
    return v;
  };
  std::uint32_t magic;
  std::memcpy(&magic, bytes.data(), 4);
  const bool v1 = magic == 0x616b3432u;
  std::size_t off = 0;
  if (v1) {
    if (bytes.size() < 256) throw UserError(path + ": truncated llama2.c header");
    const auto version = i32(4);
    if (version != 1)
      throw UserError(path + ": llama2.c format version " + std::to_string(version) +
                      " is not supported (legacy and version 1, float32, are)");
    off = 8;
  }
  const std::int64_t dim = i32(off), hidden = i32(off + 4), n_layers = i32(off + 8), n_heads = i32(off + 12),
                     n_kv = i32(off + 16), seq_len = i32(off + 24);
  std::int64_t vocab = i32(off + 20);
  bool shared = vocab > 0;
  if (v1) {
    if (vocab <= 0) throw UserError(path + ": vocab_size must be positive in a version 1 header");
    shared = bytes[off + 28] != 0;
  }
  vocab = std::abs(vocab);
  auto bad = [&](const std::string& why) {
    return UserError(path + ": not a valid llama2.c checkpoint (" + why + "; header dim " + std::to_string(dim) +
                     ", hidden_dim " + std::to_string(hidden) + ", n_layers " + std::to_string(n_layers) +
                     ", n_heads " + std::to_string(n_heads) + ", n_kv_heads " + std::to_string(n_kv) +
                     ", vocab_size " + std::to_string(vocab) + ", seq_len " + std::to_string(seq_len) + ")");
  };
  if (dim <= 0 || hidden <= 0 || n_layers <= 0 || n_heads <= 0 || n_kv <= 0 || vocab <= 0 || seq_len <= 0)
    throw bad("non-positive size");
  if (dim % n_heads != 0 || n_heads % n_kv != 0 || (dim / n_heads) % 2 != 0) throw bad("inconsistent heads");
  const std::int64_t head = dim / n_heads, kv_dim = n_kv * head;

  // The exact size implied by the header: checked before anything is allocated.
  const std::int64_t per_layer = 2 * dim + dim * dim * 2 + dim * kv_dim * 2 + 3 * dim * hidden;
  std::int64_t floats = vocab * dim + n_layers * per_layer + dim + (shared ? 0 : vocab * dim);
  if (!v1) floats += seq_len * head;  // freq_cis_real + freq_cis_imag
  const std::int64_t expected = (v1 ? 256 : 28) + floats * 4;
  if (static_cast<std::int64_t>(bytes.size()) != expected)
    throw bad("the header implies " + std::to_string(expected) + " bytes, the file has " + std::to_string(bytes.size()));

  LlamaConfig c;
  c.hidden_size = dim;
  c.intermediate_size = hidden;
  c.num_hidden_layers = n_layers;
  c.num_attention_heads = n_heads;
  c.num_key_value_heads = n_kv;
  c.vocab_size = vocab;
  c.max_position_embeddings = seq_len;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = shared;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  c.torch_dtype = "float32";
  LlamaForCausalLM model(c);

  Reader r{path, bytes, v1 ? std::size_t(256) : std::size_t(28)};
  auto per = [&](std::vector<std::int64_t> shape, const char* what) {
    std::vector<torch::Tensor> out;
    for (std::int64_t l = 0; l < n_layers; ++l) out.push_back(r.take(shape, what));
    return out;
  };
  torch::Tensor emb, rms_final, wcls;
  std::vector<torch::Tensor> rms_att, rms_ffn, wq, wk, wv, wo, w1, w2, w3;
  if (!v1) {
    emb = r.take({vocab, dim}, "token_embedding_table");
    rms_att = per({dim}, "rms_att_weight");
    wq = per({dim, dim}, "wq");
    wk = per({kv_dim, dim}, "wk");
    wv = per({kv_dim, dim}, "wv");
    wo = per({dim, dim}, "wo");
    rms_ffn = per({dim}, "rms_ffn_weight");
    w1 = per({hidden, dim}, "w1");
    w2 = per({dim, hidden}, "w2");
    w3 = per({hidden, dim}, "w3");
    rms_final = r.take({dim}, "rms_final_weight");
    r.skip(seq_len * head, "freq_cis");
  } else {
    rms_att = per({dim}, "attention_norm");
    rms_ffn = per({dim}, "ffn_norm");
    rms_final = r.take({dim}, "norm");
    emb = r.take({vocab, dim}, "tok_embeddings");
    wq = per({dim, dim}, "wq");
    wk = per({kv_dim, dim}, "wk");
    wv = per({kv_dim, dim}, "wv");
    wo = per({dim, dim}, "wo");
    w1 = per({hidden, dim}, "w1");
    w2 = per({dim, hidden}, "w2");
    w3 = per({hidden, dim}, "w3");
  }
  if (!shared) wcls = r.take({vocab, dim}, "wcls");

  torch::NoGradGuard no_grad;
  model->model->embed_tokens->weight.copy_(emb);
  model->model->norm->weight.copy_(rms_final);
  for (std::int64_t l = 0; l < n_layers; ++l) {
    auto layer = model->model->layers->ptr<LlamaDecoderLayerImpl>(l);
    layer->input_layernorm->weight.copy_(rms_att[l]);
    layer->post_attention_layernorm->weight.copy_(rms_ffn[l]);
    layer->self_attn->q_proj->weight.copy_(rope_rows_to_halves(wq[l], n_heads));
    layer->self_attn->k_proj->weight.copy_(rope_rows_to_halves(wk[l], n_kv));
    layer->self_attn->v_proj->weight.copy_(wv[l]);
    layer->self_attn->o_proj->weight.copy_(wo[l]);
    layer->mlp->gate_proj->weight.copy_(w1[l]);
    layer->mlp->down_proj->weight.copy_(w2[l]);
    layer->mlp->up_proj->weight.copy_(w3[l]);
  }
  if (!shared) model->lm_head->weight.copy_(wcls);
  model->eval();
  return model;
}

}  // namespace moin

// ---- moin convert llama2c ----

namespace moin {

void Llama2cConvertOptions::validate() const {
  require(!input.empty(), "convert llama2c: input (--input FILE.bin) is required");
  require(!output.empty(), "convert llama2c: output (--output DIR) is required");
  parse_dtype(dtype);
}

void convert_llama2c(const Llama2cConvertOptions& opts) {
  opts.validate();
  if (!opts.tokenizer.empty() && !std::filesystem::is_regular_file(opts.tokenizer))
    throw UserError(opts.tokenizer + ": tokenizer model not found");
  auto model = read_llama2c(opts.input);
  model->to(parse_dtype(opts.dtype));
  save_llama(model, opts.output);
  if (!opts.tokenizer.empty())
    fs::write_atomic(std::filesystem::path(opts.output) / "tokenizer.model", fs::read_text(opts.tokenizer));
}

}  // namespace moin
