// Arrow routing (Ostapenko et al., 2024; peft's ArrowLoraLinearLayer): zero-shot, token-level routing over a
// library of LoRA adapters, with no training. In each projection, adapter e's prototype p_e is the top right
// singular vector of its B_e A_e (a unit vector in the projection's input space, sign free). For each token
// x the projection adds
//
//   sum over the top_k adapters by |<x, p_e>|  of  softmax(|<x, p_e>| / temperature)_e * scaling_e * B_e A_e x
//
// exactly as peft computes it (the input is not normalized; the softmax runs over the top_k only). The
// library is a LoraRouting (LoraRouting::arrow_mix) that every projection of a forward call reads.
//
// Cost: every adapter of the library runs on every token (two matmuls over the stacked adapters, peft does
// the same), so it grows with the library: O(E * r * (in + out)) per token and projection.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "moin/core/error.h"

namespace moin {

class AdapterSet;

struct ArrowOptions {
  int top_k = 3;             // peft's default
  double temperature = 1.0;  // peft's router_temperature
  void validate() const {
    require(top_k > 0, "arrow.top_k must be positive");
    require(temperature > 0.0, "arrow.temperature must be positive");
  }
};

class ArrowLibrary {
 public:
  // Every adapter of `set`. Within a projection the adapters that target it must share one rank (peft
  // requires the same of a whole library); adapters that do not target a projection leave it out.
  // UserError otherwise. The library stacks copies of the tensors: the set need not outlive it.
  ArrowLibrary(const AdapterSet& set, const ArrowOptions& opts);

  // The Arrow term for the projection in `slot` on input x ([..., in]); undefined when no adapter of the
  // library targets that projection.
  torch::Tensor delta(std::int64_t slot, const torch::Tensor& x) const;
  // [E, in] prototypes of the projection in `slot` (undefined when no adapter targets it).
  const torch::Tensor& prototypes(std::int64_t slot) const;
  int size() const { return size_; }
  const ArrowOptions& options() const { return opts_; }

  // The top right singular vector of B A (A: [r, in], B: [out, r]), in float32, from an exact SVD of the
  // r x in matrix R A (B = Q R): ΔW's right singular vectors without forming ΔW.
  static torch::Tensor top_right_singular_vector(const torch::Tensor& A, const torch::Tensor& B);

 private:
  struct Slot {
    torch::Tensor prototypes;  // [E, in]
    torch::Tensor A;           // [E * r, in]: the adapters' A stacked by rows
    torch::Tensor B;           // [out, E * r]: their B side by side
    torch::Tensor scaling;     // [E]
    std::int64_t rank = 0;
  };
  std::vector<Slot> slots_;
  ArrowOptions opts_;
  int size_ = 0;
};

}  // namespace moin
