// Hugging Face checkpoint folders <-> LlamaForCausalLM. Weights are copied tensor by tensor from the
// memory-mapped safetensors files into the parameters, so loading never holds two copies of the model.
#include "moin/model/checkpoint.h"

#include <cctype>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include <c10/core/DefaultDtype.h>

#include "moin/core/error.h"
#include "moin/core/strings.h"
#include "moin/core/fs.h"
#include "moin/model/safetensors.h"
#include "moin/model/safetensors_torch.h"

namespace moin {

namespace stdfs = std::filesystem;

namespace {

// Parameters are created in `dtype` by making it the default for the duration of the constructor.
struct DefaultDtypeGuard {
  caffe2::TypeMeta saved;
  explicit DefaultDtypeGuard(torch::Dtype d) : saved(c10::get_default_dtype()) {
    c10::set_default_dtype(caffe2::TypeMeta::fromScalarType(d));
  }
  ~DefaultDtypeGuard() { c10::set_default_dtype(saved); }
};

}  // namespace

LlamaForCausalLM make_llama(const LlamaConfig& config, torch::Dtype dtype, torch::Device device, std::uint64_t seed,
                            double init_std) {
  LlamaForCausalLM model{nullptr};
  {
    DefaultDtypeGuard guard(dtype);
    model = LlamaForCausalLM(config);
  }
  model->config.torch_dtype = dtype_name(dtype);
  model->init_weights(seed, init_std);
  model->to(device);
  return model;
}

bool is_llama_checkpoint(const std::string& dir) {
  stdfs::path d(dir);
  return stdfs::is_regular_file(d / "config.json") &&
         (stdfs::is_regular_file(d / "model.safetensors") || stdfs::is_regular_file(d / "model.safetensors.index.json"));
}

void load_llama_weights(LlamaForCausalLM& model, const std::string& path) {
  // The files to read: one safetensors file, or the shards of an index.
  std::vector<std::string> files;
  stdfs::path p(path);
  if (stdfs::is_directory(p)) {
    if (stdfs::is_regular_file(p / "model.safetensors")) {
      files.push_back((p / "model.safetensors").string());
    } else if (stdfs::is_regular_file(p / "model.safetensors.index.json")) {
      p /= "model.safetensors.index.json";
    } else {
      throw UserError(path + ": no model.safetensors or model.safetensors.index.json in this folder");
    }
  }
  if (files.empty()) {
    if (p.extension() == ".json") {
      std::set<std::string> shards;
      for (const auto& [name, shard] : st::read_shard_index(p.string())) shards.insert(shard);
      for (const auto& s : shards) files.push_back((p.parent_path() / s).string());
    } else {
      files.push_back(p.string());
    }
  }

  std::map<std::string, torch::Tensor> params;
  for (auto& [name, t] : model->state_tensors()) params.emplace(name, t);
  const bool tied = model->config.tie_word_embeddings;
  std::set<std::string> seen;
  torch::Tensor extra_head;  // lm_head.weight found in a tied checkpoint
  std::string extra_head_file;

  torch::NoGradGuard no_grad;
  for (const auto& file_path : files) {
    if (!stdfs::is_regular_file(file_path)) throw UserError(file_path + ": missing (named by the shard index)");
    auto file = st::File::open(file_path);
    for (const auto& info : file.tensors()) {
      auto it = params.find(info.name);
      if (it == params.end()) {
        if (tied && info.name == "lm_head.weight") {
          extra_head = st::to_tensor(file, info);
          extra_head_file = file_path;
          continue;
        }
        // transformers 4.x wrote the RoPE frequencies of some models; they are recomputed here.
        const std::string inv_freq = "rotary_emb.inv_freq";
        if (info.name.size() > inv_freq.size() &&
            info.name.compare(info.name.size() - inv_freq.size(), inv_freq.size(), inv_freq) == 0)
          continue;
        throw UserError(file_path + ": unexpected tensor " + info.name + " (not part of a LlamaForCausalLM with this config.json)");
      }
      auto& param = it->second;
      if (at::IntArrayRef(info.shape) != param.sizes())
        throw UserError(file_path + ": tensor " + info.name + " has shape " + shape_str(info.shape) +
                        ", config.json implies " + shape_str(param.sizes().vec()));
      if (!seen.insert(info.name).second) throw UserError(file_path + ": tensor " + info.name + " appears twice");
      switch (info.dtype) {
        case st::DType::F32: case st::DType::F16: case st::DType::BF16: case st::DType::F64: break;
        default:
          throw UserError(file_path + ": tensor " + info.name + " has dtype " + st::dtype_name(info.dtype) +
                          ", a floating-point dtype is expected");
      }
      auto value = st::to_tensor(file, info);
      // One reduction per tensor: a NaN or Inf weight poisons every output, and eval would print "nan".
      if (!torch::isfinite(value).all().item<bool>())
        throw UserError(file_path + ": tensor " + info.name + " holds NaN or infinite values");
      param.copy_(value);
    }
  }
  for (const auto& [name, t] : params)
    if (!seen.count(name))
      throw UserError(path + ": tensor " + name + " missing from the checkpoint");
  if (extra_head.defined() &&
      !torch::equal(extra_head.to(torch::kFloat32), model->model->embed_tokens->weight.to(torch::kCPU, torch::kFloat32)))
    throw UserError(extra_head_file + ": tensor lm_head.weight differs from model.embed_tokens.weight, but config.json "
                    "says tie_word_embeddings is true");
}

LlamaForCausalLM load_llama(const std::string& dir, torch::Dtype dtype, torch::Device device) {
  if (!stdfs::is_directory(dir)) throw UserError(dir + ": not a folder (a model checkpoint folder is expected)");
  auto config = LlamaConfig::load(dir);
  LlamaForCausalLM model{nullptr};
  {
    DefaultDtypeGuard guard(dtype);
    model = LlamaForCausalLM(config);
  }
  model->to(device);
  load_llama_weights(model, dir);
  model->config.torch_dtype = dtype_name(dtype);
  model->eval();
  return model;
}

std::uint64_t parse_shard_size(const std::string& size) {
  // transformers' convert_file_size_to_int: GiB/MiB/KiB are powers of 2, GB/MB/KB powers of 10.
  static const std::vector<std::pair<std::string, std::uint64_t>> units = {
      {"GIB", 1ull << 30}, {"MIB", 1ull << 20}, {"KIB", 1ull << 10},
      {"GB", 1000000000ull}, {"MB", 1000000ull}, {"KB", 1000ull}, {"B", 1ull}, {"", 1ull}};
  std::string upper = size;
  for (auto& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  for (const auto& [unit, scale] : units) {
    if (upper.size() <= unit.size() || upper.compare(upper.size() - unit.size(), unit.size(), unit) != 0) continue;
    const std::string digits = upper.substr(0, upper.size() - unit.size());
    if (digits.size() > 15 || digits.find_first_not_of("0123456789") != std::string::npos) break;
    const auto n = std::stoull(digits);
    if (n == 0) break;
    return n * scale;
  }
  throw UserError("max_shard_size \"" + size + "\" is not a size (a positive integer with KB, MB, GB, KiB, MiB or GiB)");
}

void save_llama(LlamaForCausalLM& model, const std::string& dir, std::uint64_t max_shard_bytes) {
  require(max_shard_bytes > 0, "save_llama: max_shard_bytes must be positive");
  fs::ensure_dir(dir);
  const stdfs::path d(dir);
  // Hugging Face's split: tensors in order; a new shard starts when the next tensor would pass the limit
  // (a tensor larger than the limit gets a shard of its own).
  std::vector<std::vector<std::pair<std::string, torch::Tensor>>> shards(1);
  std::uint64_t current = 0, total = 0, count = 0;
  for (auto& [name, t] : model->state_tensors()) {
    const auto bytes = static_cast<std::uint64_t>(t.nbytes());
    if (current + bytes > max_shard_bytes && !shards.back().empty()) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().emplace_back(name, t);
    current += bytes;
    total += bytes;
    count += static_cast<std::uint64_t>(t.numel());
  }
  // The files this save writes; older weight files in the folder (a single file, other shards) would be
  // read instead of or beside them, so they go once the new set is complete.
  std::set<std::string> written;
  if (shards.size() == 1) {
    st::save((d / "model.safetensors").string(), shards[0], {{"format", "pt"}});
    written.insert("model.safetensors");
  } else {
    char suffix[32];
    nlohmann::json weight_map = nlohmann::json::object();
    for (std::size_t i = 0; i < shards.size(); ++i) {
      std::snprintf(suffix, sizeof suffix, "-%05zu-of-%05zu", i + 1, shards.size());
      const std::string file = std::string("model") + suffix + ".safetensors";
      st::save((d / file).string(), shards[i], {{"format", "pt"}});
      for (const auto& [name, t] : shards[i]) weight_map[name] = file;
      written.insert(file);
    }
    nlohmann::json index = {{"metadata", {{"total_size", total}, {"total_parameters", count}}},
                            {"weight_map", weight_map}};
    fs::write_json_atomic(d / "model.safetensors.index.json", index);
    written.insert("model.safetensors.index.json");
  }
  for (const auto& entry : stdfs::directory_iterator(d)) {
    const auto name = entry.path().filename().string();
    const bool weights = name == "model.safetensors" || name == "model.safetensors.index.json" ||
                         (name.rfind("model-", 0) == 0 && name.find("-of-") != std::string::npos &&
                          entry.path().extension() == ".safetensors");
    std::error_code ec;
    if (weights && !written.count(name)) stdfs::remove(entry.path(), ec);
  }
  auto config = model->config;
  config.torch_dtype = dtype_name(model->dtype());
  config.save((d / "config.json").string());
}

void InitModelOptions::validate() const {
  require(!output.empty(), "init-model: output (--output DIR) is required");
  require(init_std > 0, "init-model: init_std must be positive");
  parse_dtype(dtype);
  model.validate("init-model: model");
  parse_shard_size(max_shard_size);
}

void init_model(const InitModelOptions& opts) {
  opts.validate();
  auto model = make_llama(opts.model, parse_dtype(opts.dtype), torch::kCPU, opts.seed, opts.init_std);
  save_llama(model, opts.output, parse_shard_size(opts.max_shard_size));
}

}  // namespace moin
