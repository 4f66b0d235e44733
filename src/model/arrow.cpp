// Arrow routing over a library of LoRA adapters (see arrow.h).
#include "moin/model/arrow.h"

#include <ATen/ops/linalg_qr.h>
#include <ATen/ops/linalg_svd.h>
#include <torch/nn/functional/activation.h>

#include <limits>

#include "moin/model/adapter_set.h"

namespace moin {

torch::Tensor ArrowLibrary::top_right_singular_vector(const torch::Tensor& A, const torch::Tensor& B) {
  torch::NoGradGuard no_grad;
  auto a = A.detach().to(torch::kFloat32), b = B.detach().to(torch::kFloat32);
  auto [q, r] = at::linalg_qr(b);  // B = Q R, Q orthonormal: (B A)^T (B A) = (R A)^T (R A)
  auto [u, s, vh] = at::linalg_svd(r.mm(a), /*full_matrices=*/false);
  return vh[0].contiguous();
}

ArrowLibrary::ArrowLibrary(const AdapterSet& set, const ArrowOptions& opts) : opts_(opts), size_(set.size()) {
  opts.validate();
  require(set.size() > 0, "arrow: the library has no adapters");
  torch::NoGradGuard no_grad;
  slots_.resize(set.num_slots());
  for (std::size_t slot = 0; slot < slots_.size(); ++slot) {
    std::vector<torch::Tensor> protos, As, Bs;
    std::vector<double> scalings;
    Slot& s = slots_[slot];
    for (int e = 0; e < set.size(); ++e) {
      const AdapterSet::Entry* entry = set.entry(static_cast<std::int64_t>(slot), e);
      if (entry == nullptr) continue;
      if (As.empty()) s.rank = entry->A.size(0);
      require(entry->A.size(0) == s.rank, "arrow: the adapters of one projection must share a rank (adapter " +
                                              std::to_string(e) + " has rank " + std::to_string(entry->A.size(0)) +
                                              ", the first " + std::to_string(s.rank) + ")");
      protos.push_back(top_right_singular_vector(entry->A, entry->B).to(entry->A.options()));
      As.push_back(entry->A.detach());
      Bs.push_back(entry->B.detach());
      scalings.push_back(entry->scaling);
    }
    if (As.empty()) continue;
    s.prototypes = torch::stack(protos);
    s.A = torch::cat(As, 0);
    s.B = torch::cat(Bs, 1);
    s.scaling = torch::tensor(scalings, torch::kFloat64).to(s.A.options());
  }
}

const torch::Tensor& ArrowLibrary::prototypes(std::int64_t slot) const {
  return slots_.at(static_cast<std::size_t>(slot)).prototypes;
}

torch::Tensor ArrowLibrary::delta(std::int64_t slot, const torch::Tensor& x) const {
  if (slot < 0 || static_cast<std::size_t>(slot) >= slots_.size()) return {};
  const Slot& s = slots_[static_cast<std::size_t>(slot)];
  if (!s.A.defined()) return {};
  const std::int64_t E = s.prototypes.size(0), in = s.A.size(1);
  auto sizes = x.sizes().vec();
  auto tok = x.to(s.A.scalar_type()).reshape({-1, in});  // [t, in]
  const std::int64_t t = tok.size(0);
  // peft: |x . p_e| for every adapter, the top k kept, softmax over them (the rest at -inf: weight 0).
  auto sim = tok.mm(s.prototypes.t()).abs();  // [t, E]
  auto [top_v, idx] = sim.topk(std::min<std::int64_t>(opts_.top_k, E), 1);
  auto score = torch::full({t, E}, -std::numeric_limits<double>::infinity(), sim.options()).scatter(1, idx, top_v);
  auto coeff = torch::softmax(score / opts_.temperature, 1) * s.scaling;  // [t, E]
  // sum_e coeff[t, e] B_e A_e x_t as two matmuls over the stacked adapters.
  auto h = tok.mm(s.A.t()).view({t, E, s.rank}) * coeff.unsqueeze(-1);
  auto d = h.view({t, E * s.rank}).mm(s.B.t());  // [t, out]
  sizes.back() = d.size(1);
  return d.view(sizes);
}

}  // namespace moin
