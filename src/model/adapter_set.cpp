// Sets of LoRA adapters and per-call routing over them (see adapter_set.h, lora_routing.h).
#include "moin/model/adapter_set.h"

#include <algorithm>
#include <set>

#include "moin/core/error.h"
#include "moin/core/strings.h"

namespace moin {

AdapterSet::AdapterSet(const NamedLinears& base) {
  for (const auto& [name, lin] : base) {
    require(lin->lora_slot >= 0, "adapter set: projection " + name + " has no LoRA slot");
    by_name_.emplace(name, Projection{lin->lora_slot, lin->in_features, lin->out_features, lin->weight.device(),
                                      lin->weight.scalar_type()});
    num_slots_ = std::max(num_slots_, static_cast<std::size_t>(lin->lora_slot) + 1);
  }
}

int AdapterSet::add(std::shared_ptr<const LoraAdapter> adapter) {
  require(adapter != nullptr, "adapter set: null adapter");
  if (adapter->merged()) throw UserError("adapter set: the adapter is merged into the weights; unmerge it first");
  std::vector<Entry> row(num_slots_);
  // Everything is checked before the set changes, so a failure leaves it as it was.
  for (const auto& m : adapter->modules()) {
    auto it = by_name_.find(m.name);
    if (it == by_name_.end()) throw UserError("adapter set: the model has no module " + m.name);
    const Projection& p = it->second;
    if (m.A.size(1) != p.in || m.B.size(0) != p.out)
      throw UserError("adapter set: " + m.name + " is [" + std::to_string(p.out) + ", " + std::to_string(p.in) +
                      "] in the model but the adapter is " + shape_str(m.B.sizes().vec()) + " x " + shape_str(m.A.sizes().vec()));
    if (m.A.device() != p.device || m.A.scalar_type() != p.dtype)
      throw UserError("adapter set: " + m.name + ": the adapter is " + std::string(c10::toString(m.A.scalar_type())) +
                      " on " + m.A.device().str() + ", the model " + std::string(c10::toString(p.dtype)) + " on " +
                      p.device.str() + " (move one with to())");
    row[static_cast<std::size_t>(p.slot)] = Entry{m.A, m.B, adapter->scaling(), adapter->options().dropout};
  }
  adapters_.push_back(std::move(adapter));
  entries_.push_back(std::move(row));
  return size() - 1;
}

LoraRouting LoraRouting::all(const AdapterSet& set, int adapter) {
  require(adapter >= 0 && adapter < set.size(), "lora routing: no adapter " + std::to_string(adapter) +
                                                    " in a set of " + std::to_string(set.size()));
  LoraRouting r;
  r.set = &set;
  r.groups.push_back(Group{adapter, {}, {}});
  return r;
}

LoraRouting LoraRouting::rows(const AdapterSet& set, const std::vector<int>& per_row, torch::Device device) {
  LoraRouting r;
  r.set = &set;
  std::set<int> present;
  for (int a : per_row) {
    require(a >= -1 && a < set.size(), "lora routing: no adapter " + std::to_string(a) + " in a set of " +
                                           std::to_string(set.size()));
    if (a >= 0) present.insert(a);
  }
  // One adapter on every row: no gathers at all.
  if (present.size() == 1 && std::count(per_row.begin(), per_row.end(), *present.begin()) ==
                                 static_cast<std::ptrdiff_t>(per_row.size()))
    return all(set, *present.begin());
  for (int a : present) {
    std::vector<std::int64_t> idx;
    for (std::size_t b = 0; b < per_row.size(); ++b)
      if (per_row[b] == a) idx.push_back(static_cast<std::int64_t>(b));
    r.groups.push_back(Group{a, torch::tensor(idx, torch::kInt64).to(device), {}});
  }
  if (present.size() >= 2) {
    r.present.assign(present.begin(), present.end());
    std::vector<std::int64_t> slot(per_row.size(), 0);
    std::vector<float> scale(per_row.size(), 0.0f);
    for (std::size_t b = 0; b < per_row.size(); ++b) {
      if (per_row[b] < 0) continue;
      slot[b] = std::lower_bound(r.present.begin(), r.present.end(), per_row[b]) - r.present.begin();
      scale[b] = 1.0f;
    }
    r.row_slot = torch::tensor(slot, torch::kInt64).to(device);
    r.row_scale = torch::tensor(scale, torch::kFloat32).to(device);
    // Equal blocks: as many blocks as adapters present, each constant and on an adapter (so all distinct).
    const std::size_t n_blocks = present.size(), block = per_row.size() / n_blocks;
    bool blocks = per_row.size() % n_blocks == 0;
    for (std::size_t b = 0; blocks && b < per_row.size(); ++b)
      blocks = per_row[b] >= 0 && per_row[b] == per_row[b - b % block];
    if (blocks)
      for (std::size_t i = 0; i < n_blocks; ++i) r.block_adapters.push_back(per_row[i * block]);
  }
  return r;
}

LoraRouting LoraRouting::mixture(const AdapterSet& set, const torch::Tensor& ids, const torch::Tensor& weights) {
  require(ids.dim() == 3 && weights.sizes() == ids.sizes(),
          "lora routing: a mixture takes ids and weights of one shape [batch, time, k]");
  require(ids.scalar_type() == torch::kInt64, "lora routing: mixture ids must be int64");
  LoraRouting r;
  r.set = &set;
  auto present = std::get<0>(at::_unique(ids.cpu(), /*sorted=*/true));
  auto acc = present.accessor<std::int64_t, 1>();
  for (std::int64_t i = 0; i < present.size(0); ++i) {
    const auto a = acc[i];
    if (a < 0) continue;
    require(a < set.size(), "lora routing: no adapter " + std::to_string(a) + " in a set of " +
                                std::to_string(set.size()));
    // The token's total weight on adapter a (an id may appear in several of its k slots).
    auto w = (weights * ids.eq(a).to(weights.scalar_type())).sum(-1, /*keepdim=*/true);
    r.groups.push_back(Group{static_cast<int>(a), {}, w});
  }
  return r;
}

LoraRouting LoraRouting::arrow_mix(const ArrowLibrary& library) {
  LoraRouting r;
  r.arrow = &library;
  return r;
}

LoraRouting LoraRouting::layered(const LayerRouter& router) {
  LoraRouting r;
  r.layered_by = &router;
  return r;
}

}  // namespace moin
