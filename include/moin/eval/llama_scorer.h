// The Scorer of a Llama model with LoRA adapters: sequences are right-padded into one batch, run through
// the model without gradients with each row's adapter (one mixed-adapter forward pass), and the
// log-probability of each scored token is summed in float32. With a fixed routing (Arrow over a library of
// adapters), every row runs under that routing whatever adapter it names.
#pragma once
#include <optional>

#include "moin/eval/scorer.h"
#include "moin/route/routed_model.h"

namespace moin {

class LlamaScorer : public Scorer {
 public:
  explicit LlamaScorer(RoutedModel& model) : model_(model) {}
  LlamaScorer(RoutedModel& model, LoraRouting fixed) : model_(model), fixed_(std::move(fixed)) {}
  std::vector<double> nll(const std::vector<std::vector<int>>& seqs, const std::vector<int>& from,
                          const std::vector<int>& adapter) override;
  std::vector<std::vector<float>> token_logprobs(const std::vector<std::vector<int>>& seqs,
                                                 const std::vector<int>& from,
                                                 const std::vector<int>& adapter) override;
  int num_adapters() const override { return model_.num_adapters(); }

 private:
  // Per row and position t >= 1: log p(token t | tokens before it), masked to the scored positions ([B, T-1]
  // on the model's device; the mask as well).
  std::pair<torch::Tensor, torch::Tensor> logprobs(const std::vector<std::vector<int>>& seqs,
                                                   const std::vector<int>& from, const std::vector<int>& adapter);
  RoutedModel& model_;
  std::optional<LoraRouting> fixed_;
};

}  // namespace moin
