#include "moin/model/linear.h"

#include <torch/nn/functional/dropout.h>
#include <torch/nn/functional/linear.h>

#include "moin/model/adapter_set.h"

namespace moin {

LinearImpl::LinearImpl(std::int64_t in, std::int64_t out, bool has_bias) : in_features(in), out_features(out) {
  weight = register_parameter("weight", torch::empty({out, in}));
  if (has_bias) bias = register_parameter("bias", torch::zeros({out}));
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x, const LoraRouting* lora) {
  namespace F = torch::nn::functional;
  auto y = F::linear(x, weight, bias);
  if (lora == nullptr || lora->empty() || lora_slot < 0) return y;
  if (!lora->present.empty() && x.dim() == 3) {
    // Batched: stack the adapters present (same rank, all targeting this projection), gather each row's.
    std::vector<torch::Tensor> As, Bs;
    std::vector<double> scalings;
    bool dropout = false;
    for (int a : lora->present) {
      const AdapterSet::Entry* e = lora->set->entry(lora_slot, a);
      if (e == nullptr || (!As.empty() && e->A.size(0) != As.front().size(0))) break;
      As.push_back(e->A);
      Bs.push_back(e->B);
      scalings.push_back(e->scaling);
      dropout = dropout || (e->dropout > 0.0 && is_training());
    }
    if (As.size() == lora->present.size() && !dropout) {
      auto scale = torch::tensor(scalings, torch::kFloat64).to(x.device(), torch::kFloat32);
      auto row_scale = (scale.index_select(0, lora->row_slot) * lora->row_scale).view({-1, 1, 1});
      auto A = torch::stack(As).index_select(0, lora->row_slot);  // [B, r, in]
      auto B = torch::stack(Bs).index_select(0, lora->row_slot);  // [B, out, r]
      auto h = torch::bmm(x, A.transpose(1, 2).to(x.scalar_type()));
      auto d = torch::bmm(h, B.transpose(1, 2).to(h.scalar_type()));
      return y + d * row_scale.to(d.scalar_type());
    }
  }
  for (const auto& g : lora->groups) {
    const AdapterSet::Entry* e = lora->set->entry(lora_slot, g.adapter);
    if (e == nullptr) continue;
    auto h = g.rows.defined() ? x.index_select(0, g.rows) : x;
    if (e->dropout > 0.0 && is_training()) h = F::dropout(h, F::DropoutFuncOptions().p(e->dropout).training(true));
    auto d = F::linear(F::linear(h, e->A), e->B) * e->scaling;
    if (g.weight.defined()) d = d * g.weight.to(d.scalar_type());
    y = g.rows.defined() ? y.index_add(0, g.rows, d.to(y.scalar_type())) : y + d;
  }
  return y;
}

}  // namespace moin
