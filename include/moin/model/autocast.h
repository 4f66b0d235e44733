// Mixed precision for a forward pass, as torch.autocast does it: bf16 matrix multiplies, float32
// reductions; the weight casts cached inside the region are dropped when it ends. RAII: the previous
// autocast state of the device type is restored on exit.
#pragma once
#include <ATen/autocast_mode.h>
#include <torch/types.h>

namespace moin {

struct AutocastBf16 {
  at::DeviceType type;
  bool on, prev_enabled = false;
  at::ScalarType prev_dtype = at::kFloat;
  AutocastBf16(torch::Device device, bool enabled) : type(device.type()), on(enabled) {
    if (!on) return;
    prev_enabled = at::autocast::is_autocast_enabled(type);
    prev_dtype = at::autocast::get_autocast_dtype(type);
    at::autocast::set_autocast_enabled(type, true);
    at::autocast::set_autocast_dtype(type, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~AutocastBf16() {
    if (!on) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(type, prev_enabled);
    at::autocast::set_autocast_dtype(type, prev_dtype);
  }
  AutocastBf16(const AutocastBf16&) = delete;
  AutocastBf16& operator=(const AutocastBf16&) = delete;
};

}  // namespace moin
