// The safetensors reader and writer. Torch-free: compiled into moin_lite and into the ASan target, where a
// fuzz test throws thousands of corrupted files at File::open.
//
// Validation follows the reference implementation (huggingface/safetensors, Rust): the data section must
// be covered exactly, without holes, overlaps or trailing bytes, so a file we accept is one Python
// accepts too (and a file we write is accepted by Python).
#include "moin/model/safetensors.h"
#include "moin/core/json.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

#include "moin/core/error.h"
#include "moin/core/fs.h"

namespace moin::st {

namespace {

// The reference implementation's limit; a larger header is a corrupt length field, not a real file.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

struct DTypeEntry {
  DType dtype;
  const char* name;
  std::size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {DType::F64, "F64", 8}, {DType::F32, "F32", 4}, {DType::F16, "F16", 2},  {DType::BF16, "BF16", 2},
    {DType::I64, "I64", 8}, {DType::I32, "I32", 4}, {DType::I16, "I16", 2},  {DType::I8, "I8", 1},
    {DType::U8, "U8", 1},   {DType::BOOL, "BOOL", 1},
};

const DTypeEntry& entry(DType d) {
  for (const auto& e : kDTypes)
    if (e.dtype == d) return e;
  throw std::invalid_argument("safetensors: invalid DType value");
}

[[noreturn]] void fail(const std::string& path, const std::string& what) { throw UserError(path + ": " + what); }
[[noreturn]] void fail_tensor(const std::string& path, const std::string& name, const std::string& what) {
  throw UserError(path + ": tensor '" + name + "': " + what + " (corrupt or not a safetensors file)");
}

// Owns the descriptor and mapping while open() validates; released into the File on success.
struct Mapping {
  int fd = -1;
  void* addr = nullptr;
  std::size_t size = 0;
  ~Mapping() {
    if (addr) ::munmap(addr, size);
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::size_t dtype_size(DType d) { return entry(d).size; }
const char* dtype_name(DType d) { return entry(d).name; }

bool parse_dtype(const std::string& s, DType* out) {
  for (const auto& e : kDTypes) {
    if (s == e.name) {
      *out = e.dtype;
      return true;
    }
  }
  return false;
}

std::uint64_t TensorInfo::numel() const {
  std::uint64_t n = 1;
  for (auto d : shape) n *= static_cast<std::uint64_t>(d);
  return n;
}

File::File(File&& o) noexcept { *this = std::move(o); }

File& File::operator=(File&& o) noexcept {
  if (this != &o) {
    if (map_) ::munmap(map_, map_size_);
    path_ = std::move(o.path_);
    map_ = o.map_;
    map_size_ = o.map_size_;
    data_ = o.data_;
    tensors_ = std::move(o.tensors_);
    index_ = std::move(o.index_);
    metadata_ = std::move(o.metadata_);
    o.map_ = nullptr;
    o.map_size_ = 0;
    o.data_ = nullptr;
  }
  return *this;
}

File::~File() {
  if (map_) ::munmap(map_, map_size_);
}

Layout parse(const std::uint8_t* bytes, std::size_t size, const std::string& path) {
  const auto file_size = static_cast<std::uint64_t>(size);
  if (file_size < 8)
    fail(path, "file of " + std::to_string(file_size) + " bytes is too short for a safetensors header");
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];  // little-endian on any host
  if (header_len > kMaxHeaderBytes || header_len > file_size - 8)
    fail(path, "header length " + std::to_string(header_len) + " exceeds the file (" + std::to_string(file_size) +
                   " bytes) or the 100 MB limit (corrupt or not a safetensors file)");

  nlohmann::ordered_json header;  // ordered: tensors() keeps the header's order
  if (json_depth(std::string_view(reinterpret_cast<const char*>(bytes) + 8, static_cast<std::size_t>(header_len))) > kMaxJsonDepth)
    fail(path, "header is JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels (corrupt or not a safetensors file)");
  try {
    header = nlohmann::ordered_json::parse(bytes + 8, bytes + 8 + header_len);
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("header is not valid JSON (corrupt or not a safetensors file): ") + e.what());
  }
  if (!header.is_object()) fail(path, "header is not a JSON object (corrupt or not a safetensors file)");

  Layout out;
  out.data_offset = 8 + header_len;
  const std::uint64_t data_size = file_size - out.data_offset;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail_tensor(path, name, "__metadata__ is not an object of strings");
      for (auto m_it = v.begin(); m_it != v.end(); ++m_it) {
        if (!m_it.value().is_string())
          fail_tensor(path, name, "__metadata__ value of '" + m_it.key() + "' is not a string");
        out.metadata[m_it.key()] = m_it.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) fail_tensor(path, name, "entry is not an object");
    TensorInfo t;
    t.name = name;

    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) fail_tensor(path, name, "missing or non-string dtype");
    if (!parse_dtype(dt->get<std::string>(), &t.dtype))
      fail_tensor(path, name, "unknown dtype '" + dt->get<std::string>() + "'");

    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) fail_tensor(path, name, "missing or non-array shape");
    std::uint64_t nbytes = dtype_size(t.dtype);
    for (const auto& d : *sh) {
      // is_number_integer() holds for signed and unsigned JSON integers, never for 3.0 or "3".
      if (!d.is_number_integer()) fail_tensor(path, name, "shape holds a non-integer dimension " + d.dump());
      if (d.is_number_unsigned() ? d.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)
                                 : d.get<std::int64_t>() < 0)
        fail_tensor(path, name, "shape holds an out-of-range dimension " + d.dump());
      const auto dim = d.get<std::int64_t>();
      if (__builtin_mul_overflow(nbytes, static_cast<std::uint64_t>(dim), &nbytes))
        fail_tensor(path, name, "shape " + sh->dump() + " overflows");
      t.shape.push_back(dim);
    }

    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      fail_tensor(path, name, "data_offsets must be two non-negative integers [begin, end]");
    t.begin = (*off)[0].get<std::uint64_t>();
    t.end = (*off)[1].get<std::uint64_t>();
    if (t.begin > t.end)
      fail_tensor(path, name, "data_offsets begin " + std::to_string(t.begin) + " > end " + std::to_string(t.end));
    if (t.end > data_size)
      fail_tensor(path, name, "data_offsets end " + std::to_string(t.end) + " is beyond the data section (" +
                                  std::to_string(data_size) + " bytes; file truncated?)");
    if (t.end - t.begin != nbytes)
      fail_tensor(path, name, "data_offsets span " + std::to_string(t.end - t.begin) + " bytes but " +
                                  dt->get<std::string>() + " " + sh->dump() + " needs " + std::to_string(nbytes));
    out.tensors.push_back(std::move(t));
  }

  // Sorted by offsets, the tensors must tile the data section exactly (as the reference requires).
  std::vector<const TensorInfo*> order;
  for (const auto& t : out.tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  std::uint64_t pos = 0;
  const TensorInfo* prev = nullptr;
  for (const auto* t : order) {
    if (t->begin < pos) fail_tensor(path, t->name, "data overlaps tensor '" + prev->name + "'");
    if (t->begin > pos)
      fail_tensor(path, t->name, "gap of " + std::to_string(t->begin - pos) + " unused bytes before its data");
    pos = t->end;
    prev = t;
  }
  if (pos != data_size)
    fail(path, std::to_string(data_size - pos) + " bytes after the last tensor's data are not indexed by the header " +
                   "(corrupt or not a safetensors file)");
  return out;
}

File File::open(const std::string& path) {
  Mapping m;
  m.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (m.fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat sb {};
  if (::fstat(m.fd, &sb) != 0) fail(path, std::string("cannot stat: ") + std::strerror(errno));
  if (!S_ISREG(sb.st_mode)) fail(path, "not a regular file");
  const auto file_size = static_cast<std::uint64_t>(sb.st_size);
  if (file_size < 8)
    fail(path, "file of " + std::to_string(file_size) + " bytes is too short for a safetensors header");
  m.size = static_cast<std::size_t>(file_size);
  m.addr = ::mmap(nullptr, m.size, PROT_READ, MAP_PRIVATE, m.fd, 0);
  if (m.addr == MAP_FAILED) {
    m.addr = nullptr;
    fail(path, std::string("cannot map: ") + std::strerror(errno));
  }
  const auto* bytes = static_cast<const std::uint8_t*>(m.addr);
  Layout layout = parse(bytes, m.size, path);

  File f;
  f.path_ = path;
  f.tensors_ = std::move(layout.tensors);
  f.metadata_ = std::move(layout.metadata);
  // Duplicate JSON keys were merged by the parser, so names are unique here.
  for (std::size_t i = 0; i < f.tensors_.size(); ++i) f.index_[f.tensors_[i].name] = i;
  f.data_ = bytes + layout.data_offset;
  f.map_ = m.addr;
  f.map_size_ = m.size;
  m.addr = nullptr;  // the File owns the mapping now; the descriptor is no longer needed
  return f;
}

const TensorInfo* File::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& File::at(const std::string& name) const {
  if (const auto* t = find(name)) return *t;
  throw UserError(path_ + ": tensor " + name + " missing");
}

nlohmann::ordered_json describe(const File& f) {
  nlohmann::ordered_json tensors = nlohmann::ordered_json::array();
  for (const auto& t : f.tensors()) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    const std::uint8_t* p = f.data(t);
    for (std::uint64_t i = 0; i < t.nbytes(); ++i) h = (h ^ p[i]) * 0x100000001b3ull;
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
    tensors.push_back(nlohmann::ordered_json{{"name", t.name},
                       {"dtype", dtype_name(t.dtype)},
                       {"shape", t.shape},
                       {"data_offsets", {t.begin, t.end}},
                       {"fnv1a64", hex}});
  }
  return nlohmann::ordered_json{{"file", f.path()},
          {"header_bytes", f.data_offset() - 8},
          {"metadata", f.metadata()},
          {"tensors", tensors}};
}

void write(const std::string& path, const std::vector<std::pair<std::string, TensorView>>& tensors,
           const std::map<std::string, std::string>& metadata) {
  // The header keeps the order given; the data section puts wider dtypes first, so that every tensor
  // starts at a multiple of its element size (the data section starts 8-byte aligned) without padding,
  // which the format forbids (no holes).
  std::vector<std::size_t> layout(tensors.size());
  for (std::size_t i = 0; i < layout.size(); ++i) layout[i] = i;
  std::stable_sort(layout.begin(), layout.end(), [&](std::size_t a, std::size_t b) {
    return dtype_size(tensors[a].second.dtype) > dtype_size(tensors[b].second.dtype);
  });

  std::vector<std::pair<std::uint64_t, std::uint64_t>> offsets(tensors.size());
  std::uint64_t pos = 0;
  std::set<std::string> seen;
  for (std::size_t i : layout) {
    const auto& [name, v] = tensors[i];
    if (name == "__metadata__" || name.empty() || !seen.insert(name).second)
      throw std::invalid_argument("safetensors write " + path + ": invalid or duplicate tensor name '" + name + "'");
    std::uint64_t n = dtype_size(v.dtype);
    for (auto d : v.shape) {
      if (d < 0) throw std::invalid_argument("safetensors write " + path + ": tensor '" + name + "': negative dim");
      n *= static_cast<std::uint64_t>(d);
    }
    if (n != v.nbytes)
      throw std::invalid_argument("safetensors write " + path + ": tensor '" + name + "': " + std::to_string(v.nbytes) +
                                  " bytes given, shape and dtype need " + std::to_string(n));
    offsets[i] = {pos, pos + n};
    pos += n;
  }

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, v] = tensors[i];
    header[name] = {{"dtype", dtype_name(v.dtype)},
                    {"shape", v.shape},
                    {"data_offsets", {offsets[i].first, offsets[i].second}}};
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the format allows trailing spaces; aligns the data

  fs::write_atomic_stream(path, [&](const fs::ByteSink& sink) {
    std::uint8_t len[8];
    std::uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<std::uint8_t>(n >> (8 * i));
    sink(len, 8);
    sink(text.data(), text.size());
    for (std::size_t i : layout) {
      const auto& v = tensors[i].second;
      if (v.nbytes) sink(v.data, v.nbytes);
    }
  });
}

}  // namespace moin::st
