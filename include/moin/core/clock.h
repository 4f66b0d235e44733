// Wall-clock timing for logs and reports.
#pragma once
#include <chrono>

namespace moin {

// Seconds from t0 to now (steady clock).
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace moin
