// Numbers for report tables and system names.
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

// 0.1, 1, 2.5: an option's value as the user wrote it, for system names.
inline std::string format_general(double v) {
  std::ostringstream o;
  o << v;
  return o.str();
}

}  // namespace moin
