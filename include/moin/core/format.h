// Fixed-point figures for report tables.
#pragma once
#include <sstream>
#include <string>

namespace moin {

// v with `precision` digits after the point ("12.35").
inline std::string format_fixed(double v, int precision) {
  std::ostringstream ss;
  ss.setf(std::ios::fixed);
  ss.precision(precision);
  ss << v;
  return ss.str();
}

}  // namespace moin
