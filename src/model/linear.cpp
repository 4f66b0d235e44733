#include "moin/model/linear.h"

#include <torch/nn/functional/dropout.h>
#include <torch/nn/functional/linear.h>

namespace moin {

LinearImpl::LinearImpl(std::int64_t in, std::int64_t out, bool has_bias) : in_features(in), out_features(out) {
  weight = register_parameter("weight", torch::empty({out, in}));
  if (has_bias) bias = register_parameter("bias", torch::zeros({out}));
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  namespace F = torch::nn::functional;
  auto y = F::linear(x, weight, bias);
  if (!lora_A.defined()) return y;
  auto h = (lora_dropout > 0.0 && is_training())
               ? F::dropout(x, F::DropoutFuncOptions().p(lora_dropout).training(true))
               : x;
  return y + F::linear(F::linear(h, lora_A), lora_B) * lora_scaling;
}

}  // namespace moin
