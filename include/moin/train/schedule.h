// The learning-rate schedule: linear warmup, then cosine decay to a floor.
//
//   lr(s) = lr * (s + 1) / warmup                                            s < warmup
//   lr(s) = floor + (lr - floor) * (1 + cos(pi * (s - warmup) / (total - warmup))) / 2    otherwise
//
// with floor = lr * min_lr_ratio and s the 0-based index of the optimizer step about to be taken. The
// first step after warmup runs at the peak; the last (s = total - 1) just above the floor.
#pragma once
#include <cstdint>

namespace moin {

struct LrSchedule {
  double lr = 0.0;
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 1;
  double min_lr_ratio = 0.0;

  double at(std::int64_t step) const;
};

}  // namespace moin
