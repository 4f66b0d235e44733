// The Scorer of a Llama model with LoRA adapters: sequences are right-padded into one batch, run through
// the model without gradients with each row's adapter (one mixed-adapter forward pass), and the
// log-probability of each scored token is summed in float32.
#pragma once
#include "moin/eval/scorer.h"
#include "moin/route/routed_model.h"

namespace moin {

class LlamaScorer : public Scorer {
 public:
  explicit LlamaScorer(RoutedModel& model) : model_(model) {}
  std::vector<double> nll(const std::vector<std::vector<int>>& seqs, const std::vector<int>& from,
                          const std::vector<int>& adapter) override;
  int num_adapters() const override { return model_.num_adapters(); }

 private:
  RoutedModel& model_;
};

}  // namespace moin
