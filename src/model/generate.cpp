// Autoregressive generation: prefill the prompt into the KV cache, then one token per step.
#include "moin/model/generate.h"

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <random>

#include "moin/core/error.h"
#include "moin/data/tokenizer.h"
#include "moin/model/checkpoint.h"
#include "moin/model/adapter_set.h"

namespace moin {

void GenerateOptions::validate() const {
  require(max_new_tokens >= 0, "max_new_tokens must be non-negative");
  require(temperature >= 0.0, "temperature must be non-negative");
  require(top_p > 0.0 && top_p <= 1.0, "top_p must be in (0, 1]");
}

std::int64_t sample_token(const torch::Tensor& logits, const GenerateOptions& opts, std::uint64_t& rng_state) {
  auto l = logits.detach();
  if (opts.num_ids > 0 && opts.num_ids < l.size(-1)) l = l.narrow(-1, 0, opts.num_ids);
  l = l.to(torch::kCPU, torch::kFloat32).contiguous();
  if (opts.temperature == 0.0) return l.argmax().item<std::int64_t>();

  auto probs = torch::softmax(l / opts.temperature, -1);
  const float* p = probs.data_ptr<float>();
  const auto n = probs.numel();
  // Sort token ids by probability (ties by id, for determinism), keep the nucleus.
  std::vector<std::int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return p[a] > p[b]; });
  double total = 0.0;
  std::size_t keep = 0;
  while (keep < order.size()) {
    total += p[order[keep++]];
    if (total >= opts.top_p) break;
  }
  // One draw from a generator seeded by the running state (splitmix64 step), uniform in [0, total).
  rng_state += 0x9E3779B97F4A7C15ull;
  std::mt19937_64 gen(rng_state);
  const double u = std::uniform_real_distribution<double>(0.0, total)(gen);
  double acc = 0.0;
  for (std::size_t i = 0; i < keep; ++i) {
    acc += p[order[i]];
    if (u < acc) return order[i];
  }
  return order[keep - 1];
}

std::vector<std::int64_t> generate(LlamaForCausalLM& model, const std::vector<std::int64_t>& prompt,
                                   const GenerateOptions& opts, const std::function<void(std::int64_t)>& on_token,
                                   const LoraRouting* lora) {
  opts.validate();
  require(!prompt.empty(), "generate: the prompt must hold at least one token (BOS)");
  const auto& cfg = model->config;
  for (auto t : prompt)
    require(t >= 0 && t < cfg.vocab_size, "generate: prompt token " + std::to_string(t) + " outside the vocabulary");

  torch::NoGradGuard no_grad;
  const auto device = model->device();
  auto as_tensor = [&](const std::vector<std::int64_t>& ids) {
    return torch::tensor(ids, torch::kInt64).view({1, -1}).to(device);
  };

  std::vector<std::int64_t> seq = prompt, out;
  if (opts.max_new_tokens == 0) return out;
  std::uint64_t rng = opts.seed;
  KVCache cache;
  // The logits of the last position only: the head is the largest matmul for long prompts.
  auto last_logits = [&](const std::vector<std::int64_t>& ids, KVCache* c) {
    auto h = model->final_hidden(as_tensor(ids), c, lora);
    return model->head(h.narrow(1, h.size(1) - 1, 1))[0][0];
  };
  torch::Tensor logits = last_logits(seq, opts.use_cache ? &cache : nullptr);
  while (static_cast<int>(out.size()) < opts.max_new_tokens &&
         static_cast<std::int64_t>(seq.size()) < cfg.max_position_embeddings) {
    const auto next = sample_token(logits, opts, rng);
    seq.push_back(next);
    out.push_back(next);
    if (on_token) on_token(next);
    if (opts.stop_at_eos && next == cfg.eos_token_id) break;
    if (static_cast<int>(out.size()) == opts.max_new_tokens) break;
    logits = opts.use_cache ? last_logits({next}, &cache) : last_logits(seq, nullptr);
  }
  return out;
}

std::string generate_text(LlamaForCausalLM& model, const Tokenizer& tokenizer, const std::string& prompt,
                          const GenerateOptions& opts, const LoraRouting* lora) {
  std::vector<std::int64_t> ids;
  if (tokenizer.bos_id() >= 0) ids.push_back(tokenizer.bos_id());
  for (int t : tokenizer.encode(prompt)) ids.push_back(t);
  require(!ids.empty(), "generate: the tokenizer has no BOS token and the prompt is empty");
  // Up front, not at the first id the tokenizer cannot decode, tokens into the generation.
  const std::int64_t vocab = model->config.vocab_size, known = tokenizer.vocab_size();
  require(known >= vocab || opts.mask_unused_ids,
          "generate: the tokenizer has " + std::to_string(known) + " tokens but the model's vocabulary has " +
              std::to_string(vocab) + ": ids " + std::to_string(known) + ".." + std::to_string(vocab - 1) +
              " have no text, so this is likely not the model's tokenizer (for a model whose vocabulary is padded "
              "past its tokenizer, pass --set generation.mask_unused_ids=true)");
  GenerateOptions run = opts;
  run.num_ids = known < vocab ? known : 0;
  auto out = generate(model, ids, run, nullptr, lora);
  // Decoded together with the prompt, then the prompt's text removed: SentencePiece drops the leading
  // space of the first piece it decodes, which would glue the continuation to the prompt.
  std::vector<int> prompt_ids, all_ids;
  for (auto t : ids) prompt_ids.push_back(static_cast<int>(t));
  all_ids = prompt_ids;
  for (auto t : out)
    if (t != tokenizer.eos_id()) all_ids.push_back(static_cast<int>(t));
  const auto before = tokenizer.decode(prompt_ids), all = tokenizer.decode(all_ids);
  if (all.compare(0, before.size(), before) == 0) return all.substr(before.size());
  std::vector<int> new_ids(all_ids.begin() + static_cast<std::ptrdiff_t>(prompt_ids.size()), all_ids.end());
  return tokenizer.decode(new_ids);
}

}  // namespace moin

// ---- moin generate ----

namespace moin {

void GenerateRunOptions::validate() const {
  require(!model.empty(), "generate: model (--model DIR) is required");
  parse_dtype(dtype);
  generation.validate();
}

std::string run_generate(const GenerateRunOptions& opts) {
  opts.validate();
  std::string tok_path = opts.tokenizer;
  if (tok_path.empty()) {
    tok_path = Tokenizer::find_in_model_dir(opts.model);
    require(!tok_path.empty(), "generate: no --tokenizer given and " + opts.model +
                                   " holds neither tokenizer.json nor tokenizer.model");
  }
  auto tokenizer = Tokenizer::load(tok_path);
  auto model = load_llama(opts.model, parse_dtype(opts.dtype), parse_device(opts.device));
  require(tokenizer.vocab_size() <= model->config.vocab_size,
          "generate: the tokenizer " + tok_path + " has " + std::to_string(tokenizer.vocab_size()) +
              " tokens, more than the model's vocabulary (" + std::to_string(model->config.vocab_size) + ")");
  AdapterSet adapters(model->linears());
  LoraRouting lora;
  if (!opts.adapter.empty()) lora = LoraRouting::all(adapters, adapters.add(LoraAdapter::load(opts.adapter, model->linears())));
  return generate_text(model, tokenizer, opts.prompt, opts.generation, &lora);
}

}  // namespace moin
