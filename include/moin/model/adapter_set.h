// A set of LoRA adapters for one base model, indexed 0..size()-1, that a forward call can use together
// (model/lora_routing.h). Adding an adapter checks it against the base (module names, shapes, device,
// dtype) once, so a forward pass only looks up tensors. Adapters may differ in rank, scaling and targets:
// an adapter that does not target a projection leaves it alone. The set shares the adapters' tensors (no
// copies), so gradients of a trainable adapter reach its own A and B.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "moin/model/lora.h"

namespace moin {

class AdapterSet {
 public:
  struct Entry {
    torch::Tensor A, B;  // [r, in], [out, r]
    double scaling = 0.0;
    double dropout = 0.0;
  };

  AdapterSet() = default;
  // The projections of the base model (Llama::linears()); each must carry its lora_slot.
  explicit AdapterSet(const NamedLinears& base);

  // Adds an adapter and returns its index. Throws UserError when a module is missing from the base, or its
  // shape, device or dtype differ, or the adapter is merged into the weights.
  int add(std::shared_ptr<const LoraAdapter> adapter);
  int add(const LoraAdapter& adapter) { return add(std::make_shared<const LoraAdapter>(adapter)); }

  int size() const { return static_cast<int>(adapters_.size()); }
  // Projections of the base (lora_slot ranges over [0, num_slots())).
  std::size_t num_slots() const { return num_slots_; }
  const LoraAdapter& adapter(int i) const { return *adapters_.at(static_cast<std::size_t>(i)); }
  // The tensors adapter `i` has for the projection in `slot`; nullptr when it does not target it.
  const Entry* entry(std::int64_t slot, int i) const {
    const auto& e = entries_[static_cast<std::size_t>(i)][static_cast<std::size_t>(slot)];
    return e.A.defined() ? &e : nullptr;
  }

 private:
  struct Projection {
    std::int64_t slot, in, out;
    torch::Device device;
    torch::ScalarType dtype;
  };
  std::unordered_map<std::string, Projection> by_name_;
  std::size_t num_slots_ = 0;
  std::vector<std::shared_ptr<const LoraAdapter>> adapters_;
  std::vector<std::vector<Entry>> entries_;  // [adapter][slot]
};

}  // namespace moin
