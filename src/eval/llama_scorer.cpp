// Batched sequence NLL under a Llama model (see llama_scorer.h).
#include "moin/eval/llama_scorer.h"

#include <torch/torch.h>

#include <algorithm>

namespace moin {

std::pair<torch::Tensor, torch::Tensor> LlamaScorer::logprobs(const std::vector<std::vector<int>>& seqs,
                                                              const std::vector<int>& from,
                                                              const std::vector<int>& adapter) {
  auto& model = model_.model();
  std::size_t T = 0;
  for (const auto& s : seqs) T = std::max(T, s.size());
  const auto B = static_cast<std::int64_t>(seqs.size());
  // Right padding: a causal model never attends to positions after the ones it predicts, so pad tokens
  // change nothing that is scored; the mask drops their positions.
  auto tokens = torch::zeros({B, static_cast<std::int64_t>(T)}, torch::kLong);
  auto mask = torch::zeros({B, static_cast<std::int64_t>(T)}, torch::kFloat);
  auto tok_a = tokens.accessor<std::int64_t, 2>();
  auto mask_a = mask.accessor<float, 2>();
  for (std::int64_t i = 0; i < B; ++i) {
    const auto& s = seqs[static_cast<std::size_t>(i)];
    for (std::size_t t = 0; t < s.size(); ++t) tok_a[i][static_cast<std::int64_t>(t)] = s[t];
    for (std::size_t t = static_cast<std::size_t>(std::max(1, from[static_cast<std::size_t>(i)])); t < s.size(); ++t)
      mask_a[i][static_cast<std::int64_t>(t)] = 1.0f;
  }
  // The adapters first (a cache miss loads tensors that outlive this call), then inference mode: no
  // autograd bookkeeping at all, as transformers' evaluation under torch.inference_mode.
  AdapterBatch adapters;
  if (!fixed_) adapters = model_.batch(adapter);
  const LoraRouting* routing = fixed_ ? &*fixed_ : adapters.get();
  c10::InferenceMode inference;
  auto device = model->device();
  auto dev_tokens = tokens.to(device);
  auto logits = model->forward(dev_tokens, nullptr, routing).to(torch::kFloat);  // [B, T, V]
  auto logp = torch::log_softmax(logits.slice(1, 0, static_cast<std::int64_t>(T) - 1), -1);
  auto target = dev_tokens.slice(1, 1).unsqueeze(-1);                    // token t predicted at t - 1
  auto lp = logp.gather(-1, target).squeeze(-1);                        // [B, T - 1]
  return {lp, mask.slice(1, 1).to(device)};
}

std::vector<double> LlamaScorer::nll(const std::vector<std::vector<int>>& seqs, const std::vector<int>& from,
                                     const std::vector<int>& adapter) {
  std::vector<double> out(seqs.size(), 0.0);
  if (seqs.empty()) return out;
  auto [lp, m] = logprobs(seqs, from, adapter);
  c10::InferenceMode inference;
  auto sums = (-(lp * m)).sum(1).to(torch::kDouble).cpu();
  auto sa = sums.accessor<double, 1>();
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = sa[static_cast<std::int64_t>(i)];
  return out;
}

std::vector<std::vector<float>> LlamaScorer::token_logprobs(const std::vector<std::vector<int>>& seqs,
                                                            const std::vector<int>& from,
                                                            const std::vector<int>& adapter) {
  std::vector<std::vector<float>> out(seqs.size());
  if (seqs.empty()) return out;
  auto lp = logprobs(seqs, from, adapter).first.contiguous().cpu();
  auto acc = lp.accessor<float, 2>();
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    const auto f = static_cast<std::size_t>(std::max(1, from[i]));
    for (std::size_t t = f; t < seqs[i].size(); ++t)
      out[i].push_back(acc[static_cast<std::int64_t>(i)][static_cast<std::int64_t>(t) - 1]);
  }
  return out;
}

}  // namespace moin
