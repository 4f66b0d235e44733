// NumPy .npy files (format 1.0/2.0, little-endian, C order): the project's plain array files, read by
// np.load. Only the dtypes moin stores: float32 ("<f4") and int32 ("<i4").
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moin::npy {

template <class T> struct Array {
  std::vector<std::int64_t> shape;
  std::vector<T> data;  // row-major
};

// Written atomically (temporary file + rename). data.size() must equal the product of shape.
void save(const std::string& path, const std::vector<std::int64_t>& shape, const float* data);
void save(const std::string& path, const std::vector<std::int64_t>& shape, const std::int32_t* data);

// UserError naming the file when it is missing, truncated, not .npy, Fortran-ordered or of another dtype.
Array<float> load_f32(const std::string& path);
Array<std::int32_t> load_i32(const std::string& path);

}  // namespace moin::npy
