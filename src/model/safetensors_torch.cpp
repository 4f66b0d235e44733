#include "moin/model/safetensors_torch.h"

#include <cstring>
#include <filesystem>
#include <set>

#include "moin/core/error.h"
#include "moin/core/fs.h"

namespace moin::st {

namespace {
constexpr std::pair<DType, torch::ScalarType> kTypes[] = {
    {DType::F64, torch::kFloat64}, {DType::F32, torch::kFloat32}, {DType::F16, torch::kFloat16},
    {DType::BF16, torch::kBFloat16}, {DType::I64, torch::kInt64}, {DType::I32, torch::kInt32},
    {DType::I16, torch::kInt16},   {DType::I8, torch::kInt8},     {DType::U8, torch::kUInt8},
    {DType::BOOL, torch::kBool},
};
}  // namespace

bool dtype_of(torch::ScalarType s, DType* out) {
  for (const auto& [d, t] : kTypes) {
    if (t == s) {
      *out = d;
      return true;
    }
  }
  return false;
}

torch::ScalarType scalar_type(DType d) {
  for (const auto& [dd, t] : kTypes)
    if (dd == d) return t;
  throw std::invalid_argument("safetensors: invalid DType value");
}

torch::Tensor to_tensor(const File& file, const TensorInfo& t) {
  // A BOOL byte other than 0/1 would be an invalid torch bool: read bytes, then compare with zero.
  const bool is_bool = t.dtype == DType::BOOL;
  auto out = torch::empty(t.shape, torch::TensorOptions().dtype(is_bool ? torch::kUInt8 : scalar_type(t.dtype)));
  if (t.nbytes()) std::memcpy(out.data_ptr(), file.data(t), t.nbytes());  // little-endian host, as the format
  return is_bool ? out.ne(0) : out;
}

std::map<std::string, torch::Tensor> load(const std::string& path) {
  auto file = File::open(path);
  std::map<std::string, torch::Tensor> out;
  for (const auto& t : file.tensors()) out.emplace(t.name, to_tensor(file, t));
  return out;
}

void save(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
          const std::map<std::string, std::string>& metadata) {
  std::vector<torch::Tensor> keep;  // the contiguous CPU copies stay alive until write() returns
  std::vector<std::pair<std::string, TensorView>> views;
  keep.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    if (!tensor.defined()) throw UserError("safetensors save " + path + ": tensor '" + name + "' is undefined");
    DType d;
    if (!dtype_of(tensor.scalar_type(), &d))
      throw UserError("safetensors save " + path + ": tensor '" + name + "' has dtype " +
                      std::string(c10::toString(tensor.scalar_type())) + ", which safetensors cannot hold here");
    keep.push_back(tensor.detach().to(torch::kCPU).contiguous());
    const auto& c = keep.back();
    views.push_back({name, TensorView{d, c.sizes().vec(), c.data_ptr(), c.nbytes()}});
  }
  write(path, views, metadata);
}

std::map<std::string, std::string> read_shard_index(const std::string& index_json_path) {
  auto j = fs::read_json(index_json_path);
  auto bad = [&](const std::string& what) {
    return UserError(index_json_path + ": " + what + " (not a safetensors shard index)");
  };
  if (!j.is_object()) throw bad("not a JSON object");
  auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object()) throw bad("no \"weight_map\" object");
  std::map<std::string, std::string> out;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string()) throw bad("weight_map entry '" + it.key() + "' is not a string");
    std::string file = it.value().get<std::string>();
    std::filesystem::path p(file);
    // Shards live beside the index; anything else is a corrupt (or hostile) index.
    if (file.empty() || p.is_absolute() || p.has_parent_path() || file == "." || file == "..")
      throw bad("weight_map entry '" + it.key() + "' names '" + file + "', not a file name beside the index");
    out[it.key()] = file;
  }
  return out;
}

std::map<std::string, torch::Tensor> load_checkpoint(const std::string& path) {
  namespace stdfs = std::filesystem;
  stdfs::path p(path);
  if (stdfs::is_directory(p)) {
    if (stdfs::exists(p / "model.safetensors")) return load((p / "model.safetensors").string());
    if (stdfs::exists(p / "model.safetensors.index.json")) p = p / "model.safetensors.index.json";
    else throw UserError(path + ": folder holds neither model.safetensors nor model.safetensors.index.json");
  }
  if (p.extension() != ".json") return load(p.string());

  auto index = read_shard_index(p.string());
  std::set<std::string> shards;
  for (const auto& [name, file] : index) shards.insert(file);
  std::map<std::string, torch::Tensor> out;
  for (const auto& shard : shards) {
    auto file = File::open((p.parent_path() / shard).string());
    for (const auto& t : file.tensors()) {
      auto it = index.find(t.name);
      if (it != index.end() && it->second == shard) out.emplace(t.name, to_tensor(file, t));
    }
  }
  for (const auto& [name, file] : index)
    if (!out.count(name)) throw UserError(p.string() + ": tensor " + name + " missing from shard " + file);
  return out;
}

}  // namespace moin::st
