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

// The validated layout of a whole safetensors file held in memory, bytes [0, size): File::open maps the file
// and calls this; the fuzz test calls it on exact-size heap buffers so AddressSanitizer sees any overrun.
// `origin` names the file in every UserError.
struct Layout {
  std::vector<TensorInfo> tensors;  // in header order
  std::map<std::string, std::string> metadata;
  std::uint64_t data_offset = 0;  // where the data section starts: 8 + header length
};
Layout parse(const std::uint8_t* bytes, std::size_t size, const std::string& origin);

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
  // 8 + the header length: where the data section starts in the file.
  std::uint64_t data_offset() const { return static_cast<std::uint64_t>(data_ - static_cast<const std::uint8_t*>(map_)); }

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

// A JSON description of the file, for `moin inspect`: {"file", "header_bytes", "metadata": {..},
// "tensors": [{"name", "dtype", "shape", "data_offsets": [begin, end], "fnv1a64": "16 hex digits"}]} in
// header order. fnv1a64 is the 64-bit FNV-1a hash of the tensor's raw bytes (offset basis
// 0xcbf29ce484222325, prime 0x100000001b3), cheap to recompute anywhere.
nlohmann::json describe(const File& f);

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
