#include "moin/train/schedule.h"

#include <algorithm>
#include <cmath>

namespace moin {

double LrSchedule::at(std::int64_t step) const {
  if (step < warmup_steps) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  double floor = lr * min_lr_ratio;
  std::int64_t span = std::max<std::int64_t>(1, total_steps - warmup_steps);
  double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(span));
  return floor + (lr - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

}  // namespace moin
