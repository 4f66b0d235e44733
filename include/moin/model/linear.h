// The linear layer every projection of the model uses (q, k, v, o, gate, up, down). A bias exists only
// when the architecture has one (Qwen2's q/k/v); it is a frozen base parameter like the weight, and LoRA
// never touches it (PEFT's bias="none"). Adapters live outside the base model (model/lora.h owns their
// tensors, model/adapter_set.h groups them); each forward call says which ones it uses
// (model/lora_routing.h), so the layer holds no adapter state and one batch can mix adapters.
//
//   y = x W^T (+ b) + sum over the call's adapters a of  w_a * scaling_a * dropout(x) A_a^T B_a^T
//                                                          (A: [r, in], B: [out, r])
#pragma once
#include <torch/nn/module.h>
#include <torch/types.h>

#include "moin/model/lora_routing.h"

namespace moin {

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(std::int64_t in_features, std::int64_t out_features, bool bias = false);
  torch::Tensor forward(const torch::Tensor& x, const LoraRouting* lora = nullptr);

  std::int64_t in_features, out_features;
  torch::Tensor weight;  // [out, in], registered as "weight"
  torch::Tensor bias;    // [out], registered as "bias" when the layer has one; undefined otherwise
  // This projection's index among the model's LoRA-capable projections (-1: none, e.g. lm_head): where an
  // AdapterSet keeps its tensors for it. Set by the model that owns the layer.
  std::int64_t lora_slot = -1;
};
TORCH_MODULE(Linear);

}  // namespace moin
