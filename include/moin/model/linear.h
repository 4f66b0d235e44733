// The linear layer every projection of the model uses (q, k, v, o, gate, up, down), with a slot for one
// LoRA adapter. A bias exists only when the architecture has one (Qwen2's q/k/v); it is a frozen base
// parameter like the weight, and LoRA never touches it (PEFT's bias="none"). Adapters live outside the base model (model/lora.h owns their tensors); attaching
// one only points these fields at its A and B, so routed inference swaps experts without copying weights.
//
//   y = x W^T (+ b) + scaling * dropout(x) A^T B^T      (A: [r, in], B: [out, r])
#pragma once
#include <torch/nn/module.h>
#include <torch/types.h>

namespace moin {

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(std::int64_t in_features, std::int64_t out_features, bool bias = false);
  torch::Tensor forward(const torch::Tensor& x);

  std::int64_t in_features, out_features;
  torch::Tensor weight;  // [out, in], registered as "weight"
  torch::Tensor bias;    // [out], registered as "bias" when the layer has one; undefined otherwise

  // The attached adapter (undefined tensors when none). Set by model/lora.h.
  torch::Tensor lora_A, lora_B;
  double lora_scaling = 0.0;
  double lora_dropout = 0.0;
  bool has_lora() const { return lora_A.defined(); }
};
TORCH_MODULE(Linear);

}  // namespace moin
