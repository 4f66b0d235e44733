// The Llama forward pass. Read top to bottom like llama2.c's forward(): RMSNorm, QKV, RoPE, attention,
// SwiGLU, residuals. Numerics follow Hugging Face transformers (see llama.h).
#include "moin/model/llama.h"

#include <cmath>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/linear.h>
#include <torch/nn/functional/loss.h>

#include "moin/core/error.h"
#include "moin/core/strings.h"

namespace moin {

namespace F = torch::nn::functional;

// ---- RMSNorm: x / sqrt(mean(x^2) + eps) * weight, normalised in float32 ----

RMSNormImpl::RMSNormImpl(std::int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  auto xf = x.to(torch::kFloat32);
  auto normed = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

// ---- RoPE, "rotate halves": dimension i pairs with i + head_dim/2 ----

static torch::Tensor default_inv_freq(std::int64_t head_dim, double theta, torch::Device device) {
  // Same expression as transformers: 1 / theta^(2i/d), computed from int64 steps in float32.
  auto steps = torch::arange(0, head_dim, 2, torch::TensorOptions().dtype(torch::kInt64).device(device));
  return torch::pow(theta, steps.to(torch::kFloat32) / static_cast<double>(head_dim)).reciprocal();
}

torch::Tensor rope_inv_freq(const LlamaConfig& c, torch::Device device) {
  auto inv_freq = default_inv_freq(c.dim_head(), c.rope_theta, device);
  const auto& rs = c.rope_scaling;
  if (rs.rope_type == "linear") return inv_freq / rs.factor;  // = positions divided by factor
  if (rs.rope_type != "llama3") return inv_freq;
  // transformers' _compute_llama3_parameters, operation for operation (float32 tensors, double scalars;
  // Python's `scalar / tensor` is tensor.reciprocal() * scalar).
  const double old_context = static_cast<double>(
      rs.original_max_position_embeddings > 0 ? rs.original_max_position_embeddings : c.max_position_embeddings);
  const double low_freq_wavelen = old_context / rs.low_freq_factor;
  const double high_freq_wavelen = old_context / rs.high_freq_factor;
  auto wavelen = inv_freq.reciprocal() * (2 * M_PI);
  // Long wavelengths (low frequencies) are divided by factor; short ones are kept; between, a smooth blend.
  auto scaled = torch::where(wavelen > low_freq_wavelen, inv_freq / rs.factor, inv_freq);
  auto smooth = (wavelen.reciprocal() * old_context - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
  auto smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled;
  auto medium = (wavelen < high_freq_wavelen).logical_not() * (wavelen > low_freq_wavelen).logical_not();
  return torch::where(medium, smoothed, scaled);
}

std::pair<torch::Tensor, torch::Tensor> rope_cos_sin(const torch::Tensor& inv_freq, std::int64_t offset,
                                                     std::int64_t length) {
  auto pos = torch::arange(offset, offset + length, inv_freq.options().dtype(torch::kInt64)).to(torch::kFloat32);
  auto freqs = torch::outer(pos, inv_freq);       // [T, head_dim/2]
  auto emb = torch::cat({freqs, freqs}, -1);      // [T, head_dim]
  return {emb.cos(), emb.sin()};
}

std::pair<torch::Tensor, torch::Tensor> rope_cos_sin(std::int64_t head_dim, double theta, std::int64_t offset,
                                                     std::int64_t length, torch::Device device) {
  return rope_cos_sin(default_inv_freq(head_dim, theta, device), offset, length);
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const auto half = x.size(-1) / 2;
  auto rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos.to(x.scalar_type()) + rotated * sin.to(x.scalar_type());
}

// ---- attention ----

LlamaAttentionImpl::LlamaAttentionImpl(const LlamaConfig& c)
    : n_heads(c.num_attention_heads), n_kv_heads(c.num_key_value_heads), head_dim(c.dim_head()),
      sliding_window(c.sliding_window) {
  q_proj = register_module("q_proj", Linear(c.hidden_size, n_heads * head_dim, c.qkv_bias()));
  k_proj = register_module("k_proj", Linear(c.hidden_size, n_kv_heads * head_dim, c.qkv_bias()));
  v_proj = register_module("v_proj", Linear(c.hidden_size, n_kv_heads * head_dim, c.qkv_bias()));
  o_proj = register_module("o_proj", Linear(n_heads * head_dim, c.hidden_size, c.o_bias()));
  if (c.qk_norm()) {
    q_norm = register_module("q_norm", RMSNorm(head_dim, c.rms_norm_eps));
    k_norm = register_module("k_norm", RMSNorm(head_dim, c.rms_norm_eps));
  }
}

// [B, n_kv, T, hd] -> [B, n_kv * n_rep, T, hd]: each key/value head serves n_rep query heads.
static torch::Tensor repeat_kv(const torch::Tensor& x, std::int64_t n_rep) {
  if (n_rep == 1) return x;
  auto s = x.sizes();
  return x.unsqueeze(2).expand({s[0], s[1], n_rep, s[2], s[3]}).reshape({s[0], s[1] * n_rep, s[2], s[3]});
}

torch::Tensor LlamaAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                          torch::Tensor* cache_k, torch::Tensor* cache_v, const LoraRouting* lora) {
  const auto B = x.size(0), T = x.size(1);
  auto q = q_proj(x, lora).view({B, T, n_heads, head_dim});
  auto k = k_proj(x, lora).view({B, T, n_kv_heads, head_dim});
  if (q_norm) {
    q = q_norm(q);
    k = k_norm(k);
  }
  q = q.transpose(1, 2);  // [B, H, T, hd]
  k = k.transpose(1, 2);
  auto v = v_proj(x, lora).view({B, T, n_kv_heads, head_dim}).transpose(1, 2);
  q = apply_rope(q, cos, sin);
  k = apply_rope(k, cos, sin);

  std::int64_t past = 0;
  if (cache_k) {
    if (cache_k->defined()) {
      past = cache_k->size(2);
      k = torch::cat({*cache_k, k}, 2);
      v = torch::cat({*cache_v, v}, 2);
    }
    *cache_k = k;
    *cache_v = v;
  }
  torch::Tensor out;
  const auto S = past + T;  // keys
  const bool windowed = sliding_window > 0 && S > sliding_window;
  // CPU's flash kernel (the causal call below) reads each key/value head for its query heads itself, faster
  // than repeating them, forward and backward; elsewhere repeat, as not every CUDA kernel takes grouped heads.
  const bool grouped_in_kernel = past == 0 && !windowed && !x.is_cuda() && n_heads != n_kv_heads;
  if (!grouped_in_kernel) {
    k = repeat_kv(k, n_heads / n_kv_heads);
    v = repeat_kv(v, n_heads / n_kv_heads);
  }
  if (windowed) {
    // transformers' sliding_window_overlay: query position p sees keys j with p - window < j <= p.
    auto ones = torch::ones({T, S}, torch::TensorOptions().dtype(torch::kBool).device(x.device()));
    auto mask = ones.tril(past).logical_and(ones.tril(past - sliding_window).logical_not());
    out = at::scaled_dot_product_attention(q, k, v, mask);
  } else if (past == 0) {
    out = at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true, std::nullopt, grouped_in_kernel);
  } else if (T == 1) {
    out = at::scaled_dot_product_attention(q, k, v);  // one new token sees everything before it
  } else {
    // SDPA's is_causal aligns the mask top-left; with a cache the queries are the last T positions.
    auto mask = torch::ones({T, past + T}, torch::TensorOptions().dtype(torch::kBool).device(x.device()))
                    .tril(past);
    out = at::scaled_dot_product_attention(q, k, v, mask);
  }
  return o_proj(out.transpose(1, 2).reshape({B, T, n_heads * head_dim}), lora);
}

// ---- SwiGLU MLP ----

LlamaMLPImpl::LlamaMLPImpl(const LlamaConfig& c) {
  gate_proj = register_module("gate_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias));
  up_proj = register_module("up_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias));
  down_proj = register_module("down_proj", Linear(c.intermediate_size, c.hidden_size, c.mlp_bias));
}

torch::Tensor LlamaMLPImpl::forward(const torch::Tensor& x, const LoraRouting* lora) {
  return down_proj(F::silu(gate_proj(x, lora)) * up_proj(x, lora), lora);
}

// ---- one decoder layer: pre-norm attention and MLP, each added to the residual stream ----

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const LlamaConfig& c) {
  self_attn = register_module("self_attn", LlamaAttention(c));
  mlp = register_module("mlp", LlamaMLP(c));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

torch::Tensor LlamaDecoderLayerImpl::forward(const torch::Tensor& h, const torch::Tensor& cos, const torch::Tensor& sin,
                                             torch::Tensor* cache_k, torch::Tensor* cache_v, const LoraRouting* lora) {
  const LayerRouter* router = lora != nullptr ? lora->layered_by : nullptr;
  auto xa = input_layernorm(h);
  LoraRouting own;
  if (router) own = router->route(index, LayerRouter::Part::Attention, xa);
  auto x = h + self_attn(xa, cos, sin, cache_k, cache_v, router ? &own : lora);
  auto xm = post_attention_layernorm(x);
  if (!router) return x + mlp(xm, lora);
  own = router->route(index, LayerRouter::Part::Mlp, xm);
  auto out = x + mlp(xm, &own);
  auto beside = router->beside_mlp(index, xm);
  return beside.defined() ? out + beside.to(out.scalar_type()) : out;
}

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& c) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers->push_back(LlamaDecoderLayer(c));
    layers->ptr<LlamaDecoderLayerImpl>(i)->index = i;
  }
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

// ---- the causal language model ----

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const LlamaConfig& c) : config(c) {
  config.validate();
  model = register_module("model", LlamaModel(c));
  if (!c.tie_word_embeddings) lm_head = register_module("lm_head", Linear(c.hidden_size, c.vocab_size));
  std::int64_t slot = 0;
  for (auto& [name, lin] : linears()) lin->lora_slot = slot++;
}

static void check_tokens(const torch::Tensor& tokens, const LlamaConfig& c) {
  require(tokens.dim() == 2, "the model takes tokens of shape [batch, time], got " + std::to_string(tokens.dim()) +
                                 " dimensions");
  require(tokens.scalar_type() == torch::kInt64, "the model takes int64 tokens");
  (void)c;
}

// The embedding and the first n_layers decoder layers (no final norm): the one layer loop that the forward
// pass (all layers, with a cache and adapters) and hidden_states (a prefix of the stack) share.
static torch::Tensor run_layers(LlamaModelImpl& model, const torch::Tensor& tokens, std::int64_t past,
                                std::int64_t n_layers, const LlamaConfig& config, KVCache* cache,
                                const LoraRouting* lora) {
  auto [cos, sin] = rope_cos_sin(rope_inv_freq(config, tokens.device()), past, tokens.size(1));
  auto h = model.embed_tokens(tokens);
  for (std::int64_t i = 0; i < n_layers; ++i) {
    auto layer = model.layers->ptr<LlamaDecoderLayerImpl>(i);
    h = layer->forward(h, cos, sin, cache ? &cache->keys[i] : nullptr, cache ? &cache->values[i] : nullptr, lora);
  }
  return h;
}

torch::Tensor LlamaForCausalLMImpl::final_hidden(const torch::Tensor& tokens, KVCache* cache, const LoraRouting* lora) {
  check_tokens(tokens, config);
  const std::int64_t past = cache ? cache->length() : 0;
  const auto L = config.num_hidden_layers;
  if (cache && static_cast<std::int64_t>(cache->keys.size()) != L) {
    cache->keys.assign(L, torch::Tensor());
    cache->values.assign(L, torch::Tensor());
  }
  return model->norm(run_layers(*model, tokens, past, L, config, cache, lora));
}

torch::Tensor LlamaForCausalLMImpl::head(const torch::Tensor& hidden) {
  return lm_head ? lm_head(hidden) : F::linear(hidden, model->embed_tokens->weight);
}

torch::Tensor LlamaForCausalLMImpl::forward(const torch::Tensor& tokens, KVCache* cache, const LoraRouting* lora) {
  return head(final_hidden(tokens, cache, lora));
}

torch::Tensor LlamaForCausalLMImpl::hidden_states(const torch::Tensor& tokens, std::int64_t layer) {
  check_tokens(tokens, config);
  const auto L = config.num_hidden_layers;
  if (layer < 0) layer += L + 1;
  require(layer >= 0 && layer <= L, "hidden_states: layer must be in [-" + std::to_string(L + 1) + ", " +
                                        std::to_string(L) + "]");
  auto h = run_layers(*model, tokens, 0, layer, config, nullptr, nullptr);
  return layer == L ? model->norm(h) : h;
}

std::vector<std::pair<std::string, Linear>> LlamaForCausalLMImpl::linears() {
  std::vector<std::pair<std::string, Linear>> out;
  for (std::int64_t i = 0; i < config.num_hidden_layers; ++i) {
    auto layer = model->layers->ptr<LlamaDecoderLayerImpl>(i);
    const std::string p = "model.layers." + std::to_string(i) + ".";
    out.emplace_back(p + "self_attn.q_proj", layer->self_attn->q_proj);
    out.emplace_back(p + "self_attn.k_proj", layer->self_attn->k_proj);
    out.emplace_back(p + "self_attn.v_proj", layer->self_attn->v_proj);
    out.emplace_back(p + "self_attn.o_proj", layer->self_attn->o_proj);
    out.emplace_back(p + "mlp.gate_proj", layer->mlp->gate_proj);
    out.emplace_back(p + "mlp.up_proj", layer->mlp->up_proj);
    out.emplace_back(p + "mlp.down_proj", layer->mlp->down_proj);
  }
  return out;
}

void LlamaForCausalLMImpl::set_requires_grad(bool requires_grad) {
  for (auto& p : parameters()) p.set_requires_grad(requires_grad);
}

void LlamaForCausalLMImpl::init_weights(std::uint64_t seed, double std) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& item : named_parameters()) {
    const auto& name = item.key();
    auto& p = item.value();
    if (ends_with(name, "norm.weight")) {
      p.fill_(1.0);
    } else if (ends_with(name, ".bias")) {
      p.zero_();  // as transformers' _init_weights
    } else {
      // Drawn on the CPU in float32 so the same seed gives the same model on every device and dtype.
      auto w = at::normal(0.0, std, p.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat32));
      p.copy_(w);
    }
  }
}

torch::Device LlamaForCausalLMImpl::device() const { return model->embed_tokens->weight.device(); }
torch::Dtype LlamaForCausalLMImpl::dtype() const { return model->embed_tokens->weight.scalar_type(); }

std::vector<std::pair<std::string, torch::Tensor>> LlamaForCausalLMImpl::state_tensors() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& item : named_parameters()) out.emplace_back(item.key(), item.value());
  return out;
}

torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets, std::int64_t ignore_index) {
  auto flat = logits.reshape({-1, logits.size(-1)}).to(torch::kFloat32);
  return F::cross_entropy(flat, targets.reshape({-1}).to(torch::kInt64),
                          F::CrossEntropyFuncOptions().ignore_index(ignore_index).reduction(torch::kMean));
}

torch::Dtype parse_dtype(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "float") return torch::kFloat32;
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "half") return torch::kFloat16;
  throw UserError("unknown dtype \"" + name + "\" (float32, bfloat16 or float16)");
}

std::string dtype_name(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat32: return "float32";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat16: return "float16";
    default: throw std::runtime_error(std::string("unsupported model dtype ") + c10::toString(dtype));
  }
}

torch::Device parse_device(const std::string& name) {
  if (name == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  try {
    torch::Device d(name);
    if (d.is_cuda() && !torch::cuda::is_available())
      throw UserError("device \"" + name + "\" requested but CUDA is not available");
    if (!d.is_cpu() && !d.is_cuda()) throw UserError("unsupported device \"" + name + "\" (cpu, cuda, cuda:N, auto)");
    return d;
  } catch (const c10::Error&) {
    throw UserError("unknown device \"" + name + "\" (cpu, cuda, cuda:N, auto)");
  }
}

}  // namespace moin
