// The safetensors format, the project's own reader and writer (no LibTorch here, so the parser also
// builds under AddressSanitizer): 8-byte little-endian header length, a JSON header
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {...}}, raw data.
// Files are memory-mapped and fully validated before any byte is trusted; every problem is a UserError
// naming the file and the tensor. Torch conversion: model/safetensors_torch.h.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace moin::st {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

std::size_t dtype_size(DType d);
const char* dtype_name(DType d);                 // "F32", ...
bool parse_dtype(const std::string& s, DType* out);  // false for an unknown name

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;  // byte offsets into the data section
  std::uint64_t numel() const;
  std::uint64_t nbytes() const { return end - begin; }
};

// A validated, memory-mapped safetensors file. Movable, not copyable; unmaps on destruction.
class File {
 public:
  // Validates: header length within the file, JSON header, known dtypes, shapes (non-negative), element
  // count x dtype size == offsets span, offsets within the data section, no overlaps.
  static File open(const std::string& path);

  File(File&&) noexcept;
  File& operator=(File&&) noexcept;
  ~File();

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;  // nullptr when absent
  // UserError "FILE: tensor NAME missing" when absent.
  const TensorInfo& at(const std::string& name) const;
  const std::uint8_t* data(const TensorInfo& t) const { return data_ + t.begin; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  File() = default;
  std::string path_;
  void* map_ = nullptr;
  std::size_t map_size_ = 0;
  const std::uint8_t* data_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: the bytes are not copied and must stay alive during write().
struct TensorView {
  DType dtype;
  std::vector<std::int64_t> shape;
  const void* data;
  std::size_t nbytes;
};

// Writes atomically (temporary file + rename), tensors in the order given, 8-byte aligned data.
void write(const std::string& path, const std::vector<std::pair<std::string, TensorView>>& tensors,
           const std::map<std::string, std::string>& metadata = {});

}  // namespace moin::st
