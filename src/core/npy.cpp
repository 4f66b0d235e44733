// NumPy .npy reader/writer. Format: magic "\x93NUMPY", version (1.0: 2-byte header length, 2.0: 4-byte),
// a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (k, d), } padded with spaces to
// a multiple of 64 bytes and ending in '\n', then the raw little-endian data.
#include "moin/core/npy.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

#include "moin/core/error.h"
#include "moin/core/fs.h"

namespace moin::npy {
namespace {

std::int64_t numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

void save_raw(const std::string& path, const std::vector<std::int64_t>& shape, const char* descr, const void* data,
              std::size_t elem_size) {
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) throw std::invalid_argument("npy::save: negative dimension");
    dict += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? ", " : "");
  }
  if (shape.size() == 1) dict.resize(dict.size() - 1);  // "(5,)"
  dict += "), }";
  // numpy leaves room for the first dimension to grow to 21 digits; doing the same gives its exact bytes.
  if (!shape.empty()) dict += std::string(21 - std::min<std::size_t>(21, std::to_string(shape[0]).size()), ' ');
  std::size_t total = 10 + dict.size() + 1;
  std::size_t pad = (64 - total % 64) % 64;
  dict += std::string(pad, ' ') + "\n";
  std::string out = "\x93NUMPY";
  out += char(1);
  out += char(0);
  std::uint16_t hl = static_cast<std::uint16_t>(dict.size());
  out += char(hl & 0xff);
  out += char(hl >> 8);
  out += dict;
  std::size_t nbytes = static_cast<std::size_t>(numel(shape)) * elem_size;
  out.append(static_cast<const char*>(data), nbytes);
  fs::write_atomic(path, out);
}

// Parses the header; returns the data offset and fills descr/shape.
template <class T> Array<T> load_raw(const std::string& path, const char* want_descr) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(path + ": cannot open");
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  auto bad = [&](const std::string& why) { return UserError(path + ": not a valid .npy file (" + why + ")"); };
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) throw bad("no magic");
  int major = static_cast<unsigned char>(bytes[6]);
  std::size_t hl = 0, off = 0;
  if (major == 1) {
    hl = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    off = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw bad("truncated header");
    for (int i = 3; i >= 0; --i) hl = (hl << 8) | static_cast<unsigned char>(bytes[8 + i]);
    off = 12;
  } else {
    throw bad("version " + std::to_string(major));
  }
  if (off + hl > bytes.size()) throw bad("truncated header");
  std::string dict = bytes.substr(off, hl);
  auto value_of = [&](const std::string& key) -> std::string {
    auto p = dict.find("'" + key + "'");
    if (p == std::string::npos) throw bad("no " + key);
    p = dict.find(':', p);
    if (p == std::string::npos) throw bad("no value for " + key);
    return dict.substr(p + 1);
  };
  std::string d = value_of("descr");
  auto q1 = d.find('\''), q2 = d.find('\'', q1 + 1);
  if (q1 == std::string::npos || q2 == std::string::npos) throw bad("descr");
  std::string descr = d.substr(q1 + 1, q2 - q1 - 1);
  if (descr != want_descr && !(descr[0] == '|' && descr.substr(1) == std::string(want_descr).substr(1)))
    throw UserError(path + ": dtype " + descr + ", expected " + want_descr);
  std::string fo = value_of("fortran_order");
  if (fo.find("True") < fo.find("False")) throw UserError(path + ": Fortran-ordered arrays are not supported");
  std::string s = value_of("shape");
  auto lp = s.find('('), rp = s.find(')');
  if (lp == std::string::npos || rp == std::string::npos || rp < lp) throw bad("shape");
  Array<T> a;
  std::stringstream ss(s.substr(lp + 1, rp - lp - 1));
  std::string item;
  while (std::getline(ss, item, ',')) {
    auto b = item.find_first_not_of(" "), e = item.find_last_not_of(" ");
    if (b == std::string::npos) continue;
    item = item.substr(b, e - b + 1);
    try {
      std::size_t used = 0;
      long long v = std::stoll(item, &used);
      if (used != item.size() || v < 0) throw bad("shape");
      a.shape.push_back(v);
    } catch (const std::logic_error&) {
      throw bad("shape");
    }
  }
  std::size_t data_off = off + hl;
  std::int64_t n = numel(a.shape);
  if (n < 0 || bytes.size() - data_off != static_cast<std::size_t>(n) * sizeof(T))
    throw bad("data size does not match the shape");
  a.data.resize(static_cast<std::size_t>(n));
  if (n) std::memcpy(a.data.data(), bytes.data() + data_off, static_cast<std::size_t>(n) * sizeof(T));
  return a;
}

}  // namespace

void save(const std::string& path, const std::vector<std::int64_t>& shape, const float* data) {
  save_raw(path, shape, "<f4", data, sizeof(float));
}
void save(const std::string& path, const std::vector<std::int64_t>& shape, const std::int32_t* data) {
  save_raw(path, shape, "<i4", data, sizeof(std::int32_t));
}
Array<float> load_f32(const std::string& path) { return load_raw<float>(path, "<f4"); }
Array<std::int32_t> load_i32(const std::string& path) { return load_raw<std::int32_t>(path, "<i4"); }

}  // namespace moin::npy
