#include "moin/model/lora.h"

#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>
#include <unordered_map>

#include "moin/core/error.h"
#include "moin/core/strings.h"
#include "moin/core/fs.h"
#include "moin/model/safetensors.h"
#include "moin/model/safetensors_torch.h"

namespace moin {

namespace stdfs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kWeightsFile = "adapter_model.safetensors";
constexpr const char* kPrefix = "base_model.model.";
constexpr const char* kSuffixA = ".lora_A.weight";
constexpr const char* kSuffixB = ".lora_B.weight";  // as long as kSuffixA

// PEFT's rule: a target names a module when it equals the module's name or is a dotted suffix of it.
bool targets(const std::string& module, const std::vector<std::string>& target_modules) {
  for (const auto& t : target_modules) {
    if (module == t) return true;
    if (module.size() > t.size() && module.compare(module.size() - t.size(), t.size(), t) == 0 &&
        module[module.size() - t.size() - 1] == '.')
      return true;
  }
  return false;
}

// "model.layers.12.mlp.up_proj" -> 12; -1 when the name has no layer index.
std::int64_t layer_of(const std::string& module) {
  static const std::string key = "layers.";
  auto p = module.find(key);
  if (p == std::string::npos || (p > 0 && module[p - 1] != '.')) return -1;
  p += key.size();
  std::int64_t n = 0;
  std::size_t q = p;
  while (q < module.size() && std::isdigit(static_cast<unsigned char>(module[q]))) n = n * 10 + (module[q++] - '0');
  return q > p && q < module.size() && module[q] == '.' ? n : -1;
}

std::int64_t layer_count(const NamedLinears& base) {
  std::int64_t n = 0;
  for (const auto& [name, lin] : base) n = std::max(n, layer_of(name) + 1);
  return n;
}

// name -> the module (the holders in `base` are const, the modules they share are not).
std::unordered_map<std::string, LinearImpl*> index_of(const NamedLinears& base) {
  std::unordered_map<std::string, LinearImpl*> m;
  for (const auto& [name, lin] : base) m.emplace(name, lin.ptr().get());
  return m;
}

bool is_float(torch::ScalarType t) {
  return t == torch::kFloat32 || t == torch::kFloat64 || t == torch::kFloat16 || t == torch::kBFloat16;
}

// Every target must name at least one module of the base (a typo would otherwise train nothing).
void check_targets_match(const std::vector<std::string>& target_modules, const NamedLinears& base,
                         const std::string& where) {
  for (const auto& t : target_modules) {
    bool any = false;
    for (const auto& [name, lin] : base) any = any || targets(name, {t});
    if (!any) {
      std::set<std::string> valid;
      for (const auto& [name, lin] : base) valid.insert(name.substr(name.rfind('.') + 1));
      throw UserError(where + "target module '" + t + "' matches no projection of the base model (it has: " +
                      join({valid.begin(), valid.end()}, ", ") + ")");
    }
  }
}

// The LoRA options of a PEFT adapter_config.json; UserError for anything that is not a plain LoRA.
LoraOptions options_from_peft(const json& j, const std::string& path) {
  auto bad = [&](const std::string& what) { return UserError(path + ": " + what); };
  if (!j.is_object()) throw bad("not a JSON object");
  auto str = [&](const char* key, const std::string& def) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return def;
    if (!it->is_string()) throw bad(std::string("\"") + key + "\" must be a string");
    return it->get<std::string>();
  };
  auto num = [&](const char* key, bool required, double def) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
      if (required) throw bad(std::string("\"") + key + "\" is missing");
      return def;
    }
    if (!it->is_number()) throw bad(std::string("\"") + key + "\" must be a number");
    return it->get<double>();
  };
  auto flag = [&](const char* key) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return false;
    if (!it->is_boolean()) throw bad(std::string("\"") + key + "\" must be true or false");
    return it->get<bool>();
  };
  auto empty_or_null = [&](const char* key) {
    auto it = j.find(key);
    return it == j.end() || it->is_null() || (it->is_structured() && it->empty());
  };

  if (str("peft_type", "") != "LORA") throw bad("peft_type is \"" + str("peft_type", "") + "\", not \"LORA\"");
  if (str("bias", "none") != "none") throw bad("bias \"" + str("bias", "") + "\" is not supported (only \"none\")");
  if (flag("fan_in_fan_out")) throw bad("fan_in_fan_out adapters (GPT-2 Conv1D layers) are not supported");
  if (flag("use_dora")) throw bad("DoRA adapters (use_dora) are not supported");
  if (flag("lora_bias")) throw bad("lora_bias is not supported");
  for (const char* key : {"rank_pattern", "alpha_pattern", "layers_to_transform", "modules_to_save",
                          "layer_replication", "trainable_token_indices", "target_parameters"})
    if (!empty_or_null(key)) throw bad(std::string("\"") + key + "\" is set, which moin does not support");

  LoraOptions o;
  double r = num("r", true, 0);
  if (r != std::floor(r) || r < 1 || r > 1e6) throw bad("\"r\" must be a positive integer");
  o.r = static_cast<int>(r);
  o.alpha = num("lora_alpha", false, 8.0);  // PEFT's default
  o.dropout = num("lora_dropout", false, 0.0);
  o.use_rslora = flag("use_rslora");
  auto t = j.find("target_modules");
  if (t == j.end() || t->is_null()) throw bad("\"target_modules\" is missing");
  if (t->is_string()) {
    if (t->get<std::string>() != "all-linear")
      throw bad("target_modules \"" + t->get<std::string>() +
                "\" is a regular expression, which moin does not support (use a list of module names)");
    o.target_modules = llama_projection_names();
  } else if (t->is_array()) {
    o.target_modules.clear();
    for (const auto& x : *t) {
      if (!x.is_string()) throw bad("target_modules must hold strings");
      o.target_modules.push_back(x.get<std::string>());
    }
    std::sort(o.target_modules.begin(), o.target_modules.end());  // PEFT stores a set: order is meaningless
  } else {
    throw bad("target_modules must be a list of module names");
  }
  try {
    o.validate();
  } catch (const UserError& e) {
    throw bad(e.what());
  }
  return o;
}

}  // namespace

const std::vector<std::string>& llama_projection_names() {
  static const std::vector<std::string> names = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};
  return names;
}

std::vector<ProjectionShape> llama_projection_shapes(int layers, std::int64_t hidden, std::int64_t kv_width,
                                                     std::int64_t intermediate) {
  std::vector<ProjectionShape> out;
  for (int l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.push_back({p + "self_attn.q_proj", hidden, hidden});
    out.push_back({p + "self_attn.k_proj", hidden, kv_width});
    out.push_back({p + "self_attn.v_proj", hidden, kv_width});
    out.push_back({p + "self_attn.o_proj", hidden, hidden});
    out.push_back({p + "mlp.gate_proj", hidden, intermediate});
    out.push_back({p + "mlp.up_proj", hidden, intermediate});
    out.push_back({p + "mlp.down_proj", intermediate, hidden});
  }
  return out;
}

void LoraOptions::validate() const {
  require(r > 0, "lora: r must be positive (got " + std::to_string(r) + ")");
  require(std::isfinite(alpha) && alpha > 0, "lora: alpha must be positive");
  require(dropout >= 0.0 && dropout < 1.0, "lora: dropout must be in [0, 1)");
  require(!target_modules.empty(), "lora: target_modules must name at least one projection");
  std::set<std::string> seen;
  for (const auto& t : target_modules) {
    require(!t.empty(), "lora: target_modules holds an empty name");
    require(seen.insert(t).second, "lora: target_modules lists '" + t + "' twice");
  }
  require(seed >= 0, "lora: seed must be non-negative");
}

double LoraOptions::scaling() const { return use_rslora ? alpha / std::sqrt(double(r)) : alpha / double(r); }

std::string peft_lora_a_name(const std::string& module) { return kPrefix + module + kSuffixA; }
std::string peft_lora_b_name(const std::string& module) { return kPrefix + module + kSuffixB; }

json peft_adapter_config(const LoraOptions& o, const std::string& base_model_name_or_path) {
  auto targets_sorted = o.target_modules;
  std::sort(targets_sorted.begin(), targets_sorted.end());
  return json{
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", base_model_name_or_path.empty() ? json(nullptr) : json(base_model_name_or_path)},
      {"revision", nullptr},
      {"inference_mode", true},
      {"r", o.r},
      {"lora_alpha", o.alpha},
      {"lora_dropout", o.dropout},
      {"target_modules", targets_sorted},
      {"use_rslora", o.use_rslora},
      {"fan_in_fan_out", false},
      {"bias", "none"},
      {"init_lora_weights", true},
      {"modules_to_save", nullptr},
      {"layers_to_transform", nullptr},
      {"layers_pattern", nullptr},
      {"rank_pattern", json::object()},
      {"alpha_pattern", json::object()},
      {"use_dora", false},
      {"lora_bias", false},
  };
}

LoraAdapter LoraAdapter::create(const NamedLinears& base, const LoraOptions& opts, const LoraPlacement& where) {
  opts.validate();
  check_targets_match(opts.target_modules, base, "lora: ");
  LoraAdapter a;
  a.opts_ = opts;
  // Drawn on the CPU in float32 from one generator, module by module, so a seed gives the same adapter on
  // every device and dtype.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<std::uint64_t>(opts.seed));
  for (const auto& [name, lin] : base) {
    if (!targets(name, opts.target_modules)) continue;
    // A rank above the smaller side of W adds parameters (and memory, and time) but no expressiveness.
    const std::int64_t max_r = std::min(lin->in_features, lin->out_features);
    require(opts.r <= max_r, "lora: r = " + std::to_string(opts.r) + " exceeds min(in, out) = " +
                                 std::to_string(max_r) + " of " + name + " [" + std::to_string(lin->out_features) +
                                 " x " + std::to_string(lin->in_features) + "]");
    auto device = where.device.value_or(lin->weight.device());
    auto dtype = where.dtype.value_or(lin->weight.scalar_type());
    // kaiming_uniform_(a=sqrt(5)) on [r, in]: gain sqrt(2/(1+5)), bound gain*sqrt(3/in) = 1/sqrt(in).
    const double bound = 1.0 / std::sqrt(double(lin->in_features));
    auto A = torch::empty({opts.r, lin->in_features}, torch::kFloat32).uniform_(-bound, bound, gen);
    auto B = torch::zeros({lin->out_features, opts.r}, torch::kFloat32);
    a.modules_.push_back({name, A.to(device, dtype), B.to(device, dtype)});
  }
  a.set_trainable(true);
  return a;
}

LoraAdapter LoraAdapter::load(const std::string& dir, const NamedLinears& base, const LoraPlacement& where) {
  const auto config_path = (stdfs::path(dir) / kConfigFile).string();
  const auto weights_path = (stdfs::path(dir) / kWeightsFile).string();
  if (!stdfs::is_directory(dir)) throw UserError("adapter " + dir + ": no such folder");
  if (!stdfs::exists(config_path)) throw UserError("adapter " + dir + ": " + kConfigFile + " is missing");
  if (!stdfs::exists(weights_path)) throw UserError("adapter " + dir + ": " + kWeightsFile + " is missing");
  const json cfg = fs::read_json(config_path);

  LoraAdapter a;
  a.opts_ = options_from_peft(cfg, config_path);
  if (auto it = cfg.find("base_model_name_or_path"); it != cfg.end() && it->is_string()) a.base_name_ = *it;
  const std::string where_msg = "adapter " + dir + ": ";
  check_targets_match(a.opts_.target_modules, base, where_msg);

  auto file = st::File::open(weights_path);
  const auto by_name = index_of(base);
  const std::int64_t n_layers = layer_count(base);
  const std::int64_t r = a.opts_.r;

  // Every tensor of the file must be the A or B of a targeted module of the base, with its shape.
  // In name order, so the first problem reported does not depend on the order the writer chose.
  std::vector<const st::TensorInfo*> by_tensor_name;
  for (const auto& t : file.tensors()) by_tensor_name.push_back(&t);
  std::sort(by_tensor_name.begin(), by_tensor_name.end(),
            [](const st::TensorInfo* x, const st::TensorInfo* y) { return x->name < y->name; });
  std::set<std::string> seen;
  for (const auto* tp : by_tensor_name) {
    const auto& t = *tp;
    auto fail = [&](const std::string& why) { return UserError(where_msg + "tensor " + t.name + " " + why); };
    const bool is_a = ends_with(t.name, kSuffixA), is_b = ends_with(t.name, kSuffixB);
    if (t.name.rfind(kPrefix, 0) != 0 || !(is_a || is_b))
      throw fail("is not a LoRA A or B matrix (expected base_model.model.<module>.lora_A.weight / .lora_B.weight)");
    const std::string module =
        t.name.substr(std::strlen(kPrefix), t.name.size() - std::strlen(kPrefix) - std::strlen(kSuffixA));
    auto lin = by_name.find(module);
    if (lin == by_name.end()) {
      const auto layer = layer_of(module);
      if (layer >= n_layers)
        throw fail("is for layer " + std::to_string(layer) + ", but the base model has " + std::to_string(n_layers) +
                   " layers: the adapter was made for another model");
      throw fail("names module " + module + ", which the base model does not have");
    }
    if (!targets(module, a.opts_.target_modules))
      throw fail("is for " + module + ", which target_modules in " + kConfigFile + " does not list (" +
                 join(a.opts_.target_modules, ", ") + ")");
    if (!is_float(st::scalar_type(t.dtype)))
      throw fail(std::string("has dtype ") + st::dtype_name(t.dtype) + " (expected a floating-point type)");
    const auto& L = *lin->second;
    const std::vector<std::int64_t> want = is_a ? std::vector<std::int64_t>{r, L.in_features}
                                                : std::vector<std::int64_t>{L.out_features, r};
    if (t.shape != want)
      throw fail("has shape " + shape_str(t.shape) + " but the base model with r=" + std::to_string(r) +
                 " needs " + shape_str(want) + " (the adapter was made for another model, or r in " + kConfigFile +
                 " is wrong)");
    seen.insert(t.name);
  }
  for (const auto& [name, lin] : base) {
    if (!targets(name, a.opts_.target_modules)) continue;
    for (const auto& tn : {peft_lora_a_name(name), peft_lora_b_name(name)}) {
      if (seen.count(tn)) continue;
      std::string why;
      std::int64_t covered = 0;
      for (const auto& t : file.tensors()) covered = std::max(covered, layer_of(t.name) + 1);
      if (layer_of(name) >= covered && covered > 0)
        why = " (the adapter covers " + std::to_string(covered) + " layers, the base model has " +
              std::to_string(n_layers) + ": it was made for another model)";
      throw UserError(where_msg + "tensor " + tn + " is missing" + why);
    }
  }

  // One copy of the file's data section to the target device, then views into it: a cache miss of routed
  // inference costs one host-to-device transfer, not one per tensor.
  const auto& tensors = file.tensors();
  std::uint64_t lo = UINT64_MAX, hi = 0;
  for (const auto& t : tensors) lo = std::min(lo, t.begin), hi = std::max(hi, t.end);
  auto device = where.device.value_or(base.empty() ? torch::Device(torch::kCPU) : base.front().second->weight.device());
  torch::Tensor bytes;
  if (hi > lo) {
    const std::uint8_t* base_ptr = file.data(tensors.front()) - tensors.front().begin;
    auto mapped = torch::from_blob(const_cast<std::uint8_t*>(base_ptr + lo), {std::int64_t(hi - lo)}, torch::kUInt8);
    // The mapping goes with `file`: copy now (synchronously for a pageable source).
    bytes = device.is_cpu() ? mapped.clone() : mapped.to(device);
  }
  auto view_of = [&](const st::TensorInfo& t) {
    const auto st_type = st::scalar_type(t.dtype);
    const auto esize = static_cast<std::uint64_t>(c10::elementSize(st_type));
    auto raw = bytes.narrow(0, std::int64_t(t.begin - lo), std::int64_t(t.nbytes()));
    if ((t.begin - lo) % esize != 0) raw = raw.clone();  // misaligned in the file: a copy can be viewed
    return raw.view(st_type).view(t.shape);
  };
  for (const auto& [name, lin] : base) {
    if (!targets(name, a.opts_.target_modules)) continue;
    auto dtype = where.dtype.value_or(lin->weight.scalar_type());
    auto A = view_of(file.at(peft_lora_a_name(name))).to(dtype);
    auto B = view_of(file.at(peft_lora_b_name(name))).to(dtype);
    a.modules_.push_back({name, A, B});
  }
  // A NaN or Inf in an adapter poisons every output it touches: refused here, as the base's weights are (one
  // reduction per tensor, one device sync per adapter; the tensor is named only on failure).
  if (!a.modules_.empty()) {
    std::vector<torch::Tensor> finite;
    for (const auto& m : a.modules_) {
      finite.push_back(torch::isfinite(m.A).all());
      finite.push_back(torch::isfinite(m.B).all());
    }
    if (!torch::stack(finite).all().item<bool>())
      for (const auto& m : a.modules_)
        for (const auto& [t, suffix] : {std::pair{m.A, kSuffixA}, std::pair{m.B, kSuffixB}})
          if (!torch::isfinite(t).all().item<bool>())
            throw UserError(where_msg + "tensor " + std::string(kPrefix) + m.name + suffix +
                            " holds NaN or infinite values");
  }
  a.set_trainable(where.trainable);
  return a;
}

void LoraAdapter::save(const std::string& dir, const std::string& base_model_name_or_path) const {
  require(!modules_.empty(), "lora: cannot save an empty adapter to " + dir);
  fs::ensure_dir(dir);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  tensors.reserve(2 * modules_.size());
  for (const auto& m : modules_) {
    tensors.emplace_back(peft_lora_a_name(m.name), m.A);
    tensors.emplace_back(peft_lora_b_name(m.name), m.B);
  }
  // Weights first: a crash between the two files leaves a config that still describes the old weights'
  // layout, or the new one; load() checks every shape against the config either way.
  st::save((stdfs::path(dir) / kWeightsFile).string(), tensors, {{"format", "pt"}});
  const auto& name = base_model_name_or_path.empty() ? base_name_ : base_model_name_or_path;
  fs::write_json_atomic(stdfs::path(dir) / kConfigFile, peft_adapter_config(opts_, name));
}

void LoraAdapter::randomize_b(std::int64_t seed, double std) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<std::uint64_t>(seed));
  for (auto& m : modules_) m.B.copy_(torch::empty(m.B.sizes(), torch::kFloat32).normal_(0.0, std, gen));
}

std::vector<torch::Tensor> LoraAdapter::parameters() const {
  std::vector<torch::Tensor> out;
  out.reserve(2 * modules_.size());
  for (const auto& m : modules_) out.push_back(m.A), out.push_back(m.B);
  return out;
}

std::int64_t LoraAdapter::num_parameters() const {
  std::int64_t n = 0;
  for (const auto& m : modules_) n += m.A.numel() + m.B.numel();
  return n;
}

void LoraAdapter::set_trainable(bool trainable) {
  // detach(): loaded tensors are views of one buffer; as detached leaves each can require grad on its own.
  for (auto& m : modules_) {
    if (m.A.requires_grad() == trainable && m.B.requires_grad() == trainable) continue;
    m.A = m.A.detach().requires_grad_(trainable);
    m.B = m.B.detach().requires_grad_(trainable);
  }
}

void LoraAdapter::to(torch::Device device, std::optional<torch::ScalarType> dtype) {
  for (auto& m : modules_) {
    for (auto* t : {&m.A, &m.B}) {
      const bool rg = t->requires_grad();
      *t = t->detach().to(device, dtype.value_or(t->scalar_type())).requires_grad_(rg);
    }
  }
}

namespace {
// W += sign * s * B A, in float32 (float64 for double weights) so bf16 weights lose no more than one rounding.
void fold(const LoraAdapter& a, const NamedLinears& base, double sign) {
  torch::NoGradGuard no_grad;
  const auto by_name = index_of(base);
  for (const auto& m : a.modules()) {
    auto it = by_name.find(m.name);
    if (it == by_name.end()) throw UserError("lora merge: the model has no module " + m.name);
    auto& W = it->second->weight;
    if (W.size(0) != m.B.size(0) || W.size(1) != m.A.size(1))
      throw UserError("lora merge: " + m.name + " is " + shape_str(W.sizes().vec()) + " in the model but the adapter is " +
                      shape_str(m.B.sizes().vec()) + " x " + shape_str(m.A.sizes().vec()));
    const auto acc = W.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
    auto delta = torch::matmul(m.B.to(W.device(), acc), m.A.to(W.device(), acc)).mul_(sign * a.scaling());
    if (W.scalar_type() == acc) {
      W.add_(delta);
    } else {
      W.copy_(W.to(acc).add_(delta));
    }
  }
}
}  // namespace

void LoraAdapter::merge(const NamedLinears& base) {
  if (merged_) throw UserError("lora merge: the adapter is already merged");
  fold(*this, base, +1.0);
  merged_ = true;
}

void LoraAdapter::unmerge(const NamedLinears& base) {
  if (!merged_) throw UserError("lora unmerge: the adapter is not merged");
  fold(*this, base, -1.0);
  merged_ = false;
}

}  // namespace moin
