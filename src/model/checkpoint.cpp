// Hugging Face checkpoint folders <-> LlamaForCausalLM. Weights are copied tensor by tensor from the
// memory-mapped safetensors files into the parameters, so loading never holds two copies of the model.
#include "moin/model/checkpoint.h"

#include <filesystem>
#include <map>
#include <set>

#include <c10/core/DefaultDtype.h>

#include "moin/core/error.h"
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

std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string shape_str(const std::vector<std::int64_t>& s) { return shape_str(at::IntArrayRef(s)); }

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
                        ", config.json implies " + shape_str(param.sizes()));
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

void save_llama(LlamaForCausalLM& model, const std::string& dir) {
  fs::ensure_dir(dir);
  st::save((stdfs::path(dir) / "model.safetensors").string(), model->state_tensors(), {{"format", "pt"}});
  // A sharded checkpoint saved earlier in this folder would shadow nothing, but would confuse readers.
  std::error_code ec;
  stdfs::remove(stdfs::path(dir) / "model.safetensors.index.json", ec);
  auto config = model->config;
  config.torch_dtype = dtype_name(model->dtype());
  config.save((stdfs::path(dir) / "config.json").string());
}

void InitModelOptions::validate() const {
  require(!output.empty(), "init-model: output (--output DIR) is required");
  require(init_std > 0, "init-model: init_std must be positive");
  parse_dtype(dtype);
  model.validate("init-model: model");
}

void init_model(const InitModelOptions& opts) {
  opts.validate();
  auto model = make_llama(opts.model, parse_dtype(opts.dtype), torch::kCPU, opts.seed, opts.init_std);
  save_llama(model, opts.output);
}

}  // namespace moin
