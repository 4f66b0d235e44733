#include "moin/model/linear.h"

#include <torch/nn/functional/dropout.h>
#include <torch/nn/functional/linear.h>

#include "moin/model/adapter_set.h"
#include "moin/model/arrow.h"

namespace moin {

LinearImpl::LinearImpl(std::int64_t in, std::int64_t out, bool has_bias) : in_features(in), out_features(out) {
  weight = register_parameter("weight", torch::empty({out, in}));
  if (has_bias) bias = register_parameter("bias", torch::zeros({out}));
}

namespace {

// An adapter's LoRA term on rows h: two thin matmuls, scaled.
torch::Tensor thin_delta(const AdapterSet::Entry& e, const torch::Tensor& h) {
  namespace F = torch::nn::functional;
  return F::linear(F::linear(h, e.A.to(h.scalar_type())), e.B.to(h.scalar_type())) * e.scaling;
}

// Without autograd, a group of rows that shares one adapter can fold it into a copy of W (r*in*out
// multiply-adds once per call) instead of two thin matmuls per token (2*r*(in+out) each, which run well
// below the machine's matmul speed at small r: counted twice here). Each group that gains is folded; the
// rows of the others go through the base weight with the rest and get their two thin matmuls added (one
// small group left a whole mixed batch on the slower per-row path before). Returns an undefined tensor when
// the call does not qualify or no group gains.
torch::Tensor forward_merged(const LinearImpl& lin, const torch::Tensor& x, const LoraRouting& lora) {
  namespace F = torch::nn::functional;
  if (torch::GradMode::is_enabled() || x.dim() != 3) return {};
  const std::int64_t B = x.size(0), T = x.size(1), in = lin.in_features, out = lin.out_features;
  std::vector<std::size_t> folded, thin;  // indices into lora.groups
  for (std::size_t gi = 0; gi < lora.groups.size(); ++gi) {
    const auto& g = lora.groups[gi];
    if (g.weight.defined()) return {};  // a mixture weights tokens, not rows
    if (!g.rows.defined() && lora.groups.size() > 1) return {};
    const AdapterSet::Entry* e = lora.set->entry(lin.lora_slot, g.adapter);
    if (e != nullptr && e->dropout > 0.0 && lin.is_training()) return {};
    if (e == nullptr) continue;  // this projection has no adapter here: base rows
    const std::int64_t rows = g.rows.defined() ? g.rows.numel() : B;
    (2 * rows * T * (in + out) < in * out ? thin : folded).push_back(gi);
  }
  if (folded.empty()) return {};
  auto merged = [&](const LoraRouting::Group& g) {
    const AdapterSet::Entry* e = lora.set->entry(lin.lora_slot, g.adapter);
    return torch::addmm(lin.weight, e->B.to(lin.weight.scalar_type()), e->A.to(lin.weight.scalar_type()), 1.0,
                        e->scaling);
  };
  if (lora.groups.size() == 1 && !lora.groups.front().rows.defined())
    return F::linear(x, merged(lora.groups.front()), lin.bias);
  std::vector<torch::Tensor> weights(lora.groups.size());
  for (std::size_t gi : folded) weights[gi] = merged(lora.groups[gi]);
  auto y = torch::empty({B, T, out}, x.options());
  if (x.device().is_cpu()) {
    // Runs of consecutive rows on one weight (the evaluation sorts its jobs by adapter, so a group is
    // usually one run): each run is a matmul straight into its slice of y, with no gather or scatter.
    std::vector<int> row_group(static_cast<std::size_t>(B), -1);
    for (std::size_t gi : folded) {
      const auto& rows = lora.groups[gi].rows;
      auto acc = rows.accessor<std::int64_t, 1>();
      for (std::int64_t j = 0; j < rows.numel(); ++j) row_group[static_cast<std::size_t>(acc[j])] = static_cast<int>(gi);
    }
    for (std::int64_t b0 = 0; b0 < B;) {
      std::int64_t b1 = b0 + 1;
      while (b1 < B && row_group[static_cast<std::size_t>(b1)] == row_group[static_cast<std::size_t>(b0)]) ++b1;
      const int gi = row_group[static_cast<std::size_t>(b0)];
      const auto& w = gi < 0 ? lin.weight : weights[static_cast<std::size_t>(gi)];
      auto dst = y.narrow(0, b0, b1 - b0).view({-1, out});
      torch::mm_out(dst, x.narrow(0, b0, b1 - b0).reshape({-1, in}), w.t());
      if (lin.bias.defined()) dst.add_(lin.bias);
      b0 = b1;
    }
  } else {
    // Rows on the base weight: those no folded group names.
    auto base_row = torch::ones({B}, torch::TensorOptions().dtype(torch::kBool).device(x.device()));
    for (std::size_t gi : folded) base_row.index_fill_(0, lora.groups[gi].rows, false);
    auto rows = base_row.nonzero().view({-1});
    if (rows.numel() > 0) y.index_copy_(0, rows, F::linear(x.index_select(0, rows), lin.weight, lin.bias));
    for (std::size_t gi : folded) {
      const auto& g = lora.groups[gi];
      y.index_copy_(0, g.rows, F::linear(x.index_select(0, g.rows), weights[gi], lin.bias).to(y.scalar_type()));
    }
  }
  for (std::size_t gi : thin) {
    const auto& g = lora.groups[gi];
    const AdapterSet::Entry* e = lora.set->entry(lin.lora_slot, g.adapter);
    y.index_add_(0, g.rows, thin_delta(*e, x.index_select(0, g.rows)).to(y.scalar_type()));
  }
  return y;
}

// A mixture whose every group weights tokens over the whole batch, each adapter of one rank here: two
// matmuls over the stacked adapters (A [E*r, in], B [out, E*r]) with each rank slice scaled by its
// token's weight, instead of two per adapter. Undefined when the call does not qualify.
torch::Tensor mixture_stacked(const LinearImpl& lin, const torch::Tensor& x, const LoraRouting& lora) {
  namespace F = torch::nn::functional;
  std::vector<torch::Tensor> As, Bs, ws;
  std::int64_t rank = -1;
  for (const auto& g : lora.groups) {
    if (!g.weight.defined() || g.rows.defined()) return {};
    const AdapterSet::Entry* e = lora.set->entry(lin.lora_slot, g.adapter);
    if (e == nullptr) continue;
    if (rank < 0) rank = e->A.size(0);
    if (e->A.size(0) != rank || (e->dropout > 0.0 && lin.is_training())) return {};
    As.push_back(e->A);
    Bs.push_back(e->B);
    ws.push_back(g.weight * e->scaling);  // [B, T, 1]
  }
  if (As.empty()) return {};
  auto w = torch::cat(ws, -1).repeat_interleave(rank, -1);  // [B, T, E * r]
  auto h = F::linear(x, torch::cat(As, 0).to(x.scalar_type())) * w.to(x.scalar_type());
  return F::linear(h, torch::cat(Bs, 1).to(h.scalar_type()));
}

}  // namespace

torch::Tensor LinearImpl::forward(const torch::Tensor& x, const LoraRouting* lora) {
  namespace F = torch::nn::functional;
  if (lora != nullptr && lora->layered_by != nullptr) lora = nullptr;  // decoder layers resolve it; else: base
  if (lora != nullptr && lora->arrow != nullptr) {
    auto y = F::linear(x, weight, bias);
    auto d = lora->arrow->delta(lora_slot, x);
    return d.defined() ? y + d.to(y.scalar_type()) : y;
  }
  if (lora != nullptr && !lora->empty() && lora_slot >= 0) {
    auto y = forward_merged(*this, x, *lora);
    if (y.defined()) return y;
  }
  auto y = F::linear(x, weight, bias);
  if (lora == nullptr || lora->empty() || lora_slot < 0) return y;
  if (!lora->present.empty() && x.dim() == 3) {
    // Batched: stack the adapters (same rank, all targeting this projection).
    const bool blocks = !lora->block_adapters.empty();
    const auto& ids = blocks ? lora->block_adapters : lora->present;
    std::vector<torch::Tensor> As, Bs;
    std::vector<double> scalings;
    bool dropout = false;
    for (int a : ids) {
      const AdapterSet::Entry* e = lora->set->entry(lora_slot, a);
      if (e == nullptr || (!As.empty() && e->A.size(0) != As.front().size(0))) break;
      As.push_back(e->A);
      Bs.push_back(e->B);
      scalings.push_back(e->scaling);
      dropout = dropout || (e->dropout > 0.0 && is_training());
    }
    if (As.size() == ids.size() && !dropout) {
      auto scale = torch::tensor(scalings, torch::kFloat64).to(x.device(), torch::kFloat32);
      if (blocks) {
        // Equal contiguous blocks of rows, one adapter each (a packed training step): one bmm per matmul
        // over [blocks, rows x T, in] with no gathers; the scaling rides on A, the add on baddbmm.
        const auto E = static_cast<std::int64_t>(As.size());
        auto A = torch::stack(As) * scale.view({-1, 1, 1});  // [E, r, in]
        auto B = torch::stack(Bs);                            // [E, out, r]
        auto h = torch::bmm(x.reshape({E, -1, x.size(-1)}), A.transpose(1, 2).to(x.scalar_type()));
        return torch::baddbmm(y.reshape({E, -1, y.size(-1)}), h, B.transpose(1, 2).to(h.scalar_type()))
            .view(y.sizes());
      }
      // Any rows: gather each row's pair (a base row's scaled by 0).
      auto row_scale = (scale.index_select(0, lora->row_slot) * lora->row_scale).view({-1, 1, 1});
      auto A = torch::stack(As).index_select(0, lora->row_slot);  // [B, r, in]
      auto B = torch::stack(Bs).index_select(0, lora->row_slot);  // [B, out, r]
      auto h = torch::bmm(x, A.transpose(1, 2).to(x.scalar_type()));
      auto d = torch::bmm(h, B.transpose(1, 2).to(h.scalar_type()));
      return y + d * row_scale.to(d.scalar_type());
    }
  }
  if (lora->groups.size() > 1 && x.dim() == 3) {
    auto d = mixture_stacked(*this, x, *lora);
    if (d.defined()) return y + d.to(y.scalar_type());
  }
  for (const auto& g : lora->groups) {
    const AdapterSet::Entry* e = lora->set->entry(lora_slot, g.adapter);
    if (e == nullptr) continue;
    auto h = g.rows.defined() ? x.index_select(0, g.rows) : x;
    if (e->dropout > 0.0 && is_training()) h = F::dropout(h, F::DropoutFuncOptions().p(e->dropout).training(true));
    auto d = thin_delta(*e, h);
    if (g.weight.defined()) d = d * g.weight.to(d.scalar_type());
    y = g.rows.defined() ? y.index_add(0, g.rows, d.to(y.scalar_type())) : y + d;
  }
  return y;
}

}  // namespace moin
