// Scoring token sequences under a language model, each sequence with its own adapter (or none): the one
// operation perplexity evaluation needs. An interface so the evaluation logic (prefix routing, batching,
// token weighting) is tested on its own with a small reference model, and runs on a Llama base with LoRA
// experts (llama_scorer.h) in practice.
#pragma once
#include <string>
#include <vector>

namespace moin {

class Scorer {
 public:
  virtual ~Scorer() = default;
  // For each sequence i, under adapter[i] (an index into the adapters the scorer was built with, or -1 for
  // the bare base model): the sum over positions t in [from[i], seqs[i].size()) of -log p(seqs[i][t] |
  // seqs[i][0..t)), in nats. from[i] >= 1. One call may mix adapters.
  virtual std::vector<double> nll(const std::vector<std::vector<int>>& seqs, const std::vector<int>& from,
                                  const std::vector<int>& adapter) = 0;
  // The terms nll() sums, one per scored position: log p(seqs[i][t] | seqs[i][0..t)) for t in [from[i],
  // seqs[i].size()). For systems that mix distributions token by token (the c-BTM ensemble).
  virtual std::vector<std::vector<float>> token_logprobs(const std::vector<std::vector<int>>& seqs,
                                                         const std::vector<int>& from,
                                                         const std::vector<int>& adapter) = 0;
  virtual int num_adapters() const = 0;
};

}  // namespace moin
