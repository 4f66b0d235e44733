// A learned token-level mixture of LoRA experts (see mixture.h).
#include "moin/model/mixture.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/functional/activation.h>

#include <filesystem>

#include "moin/core/config.h"
#include "moin/core/fs.h"
#include "moin/model/safetensors_torch.h"

namespace moin {

namespace stdfs = std::filesystem;

namespace {

constexpr const char* kFormat = "moin-mixture";
constexpr int kSchemaVersion = 1;
constexpr const char* kRouterFile = "router.safetensors";

// Every expert over the whole batch, each token's output weighted by its gate ([B, T, K]; 0: unchosen).
LoraRouting mixture_of(const AdapterSet& experts, const torch::Tensor& gates) {
  LoraRouting r;
  r.set = &experts;
  for (int e = 0; e < experts.size(); ++e) r.groups.push_back(LoraRouting::Group{e, {}, gates.narrow(-1, e, 1)});
  return r;
}

std::string router_name(std::int64_t layer, LayerRouter::Part part) {
  return "model.layers." + std::to_string(layer) +
         (part == LayerRouter::Part::Mlp ? ".mlp.router.weight" : ".self_attn.router.weight");
}

}  // namespace

ExpertMixture::ExpertMixture(std::shared_ptr<AdapterSet> experts, std::int64_t hidden_size, std::int64_t num_layers,
                             const MixtureOptions& opts, std::uint64_t seed)
    : experts_(std::move(experts)), opts_(opts), num_layers_(num_layers) {
  opts_.validate();
  require(experts_ && experts_->size() > 0, "mixture: no experts to mix");
  require(opts_.top_k <= experts_->size(), "mixture: top_k " + std::to_string(opts_.top_k) + " exceeds the " +
                                               std::to_string(experts_->size()) + " experts");
  const auto& first = experts_->adapter(0).modules().front().A;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const std::int64_t K = experts_->size();
  for (std::int64_t l = 0; l < num_layers; ++l) {
    for (Part part : {Part::Mlp, Part::Attention}) {
      if (part == Part::Attention && !opts_.attention) continue;
      // Drawn on the CPU in float32 so the same seed gives the same routers on every device.
      auto w = at::normal(0.0, opts_.init_std, {K, hidden_size}, gen, torch::TensorOptions().dtype(torch::kFloat32));
      named_.emplace_back(router_name(l, part), w.to(first.device()).set_requires_grad(true));
    }
  }
}

const torch::Tensor& ExpertMixture::router(std::int64_t layer, Part part) const {
  const std::size_t per_layer = opts_.attention ? 2 : 1;
  const std::size_t i = static_cast<std::size_t>(layer) * per_layer + (part == Part::Mlp ? 0 : 1);
  return named_.at(i).second;
}

LoraRouting ExpertMixture::route(std::int64_t layer, Part part, const torch::Tensor& x) const {
  if (part == Part::Attention && !opts_.attention) return {};
  require(layer >= 0 && layer < num_layers_, "mixture: the model has more layers than the mixture's " +
                                                 std::to_string(num_layers_));
  const std::int64_t K = experts_->size();
  auto logits = torch::matmul(x.to(torch::kFloat32), router(layer, part).t());  // [B, T, K]
  const bool soft = opts_.top_k == 0 || opts_.top_k == K;
  if (soft) return mixture_of(*experts_, torch::softmax(logits, -1));
  auto [top, idx] = logits.topk(opts_.top_k, -1);
  // Switch Transformer's K * sum_e f_e P_e (f_e = share of the top-k slots on e, not differentiable), only
  // when it trains; soft routing is balanced by construction (f_e = 1/K: the loss is the constant 1).
  if (torch::GradMode::is_enabled() && opts_.balance_coef > 0.0) {
    auto f = torch::zeros_like(logits).scatter(-1, idx, 1.0).reshape({-1, K}).mean(0) / static_cast<double>(opts_.top_k);
    auto p = torch::softmax(logits, -1).reshape({-1, K}).mean(0);
    balance_.push_back(static_cast<double>(K) * (f * p).sum());
  }
  return mixture_of(*experts_, torch::zeros_like(logits).scatter(-1, idx, torch::softmax(top, -1)));
}

torch::Tensor ExpertMixture::take_balance_loss() {
  if (balance_.empty()) return torch::zeros({}, named_.front().second.options().requires_grad(false));
  auto loss = torch::stack(balance_).mean();
  balance_.clear();
  return loss;
}

void ExpertMixture::save(const std::string& dir, const std::vector<std::string>& expert_dirs,
                         const std::vector<int>& clusters) const {
  require(static_cast<int>(expert_dirs.size()) == size() && static_cast<int>(clusters.size()) == size(),
          "mixture: save needs the folder and the cluster of every expert");
  fs::ensure_dir(dir);
  std::vector<std::string> dirs = expert_dirs;
  if (opts_.train_experts) {
    // The experts changed with the routers: they are part of the result.
    for (int e = 0; e < size(); ++e) {
      const auto sub = stdfs::path(dir) / "experts" / std::to_string(clusters[static_cast<std::size_t>(e)]);
      experts_->adapter(e).save(sub.string());
      dirs[static_cast<std::size_t>(e)] = stdfs::path("experts") / std::to_string(clusters[static_cast<std::size_t>(e)]);
    }
  }
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& [name, t] : named_) tensors.emplace_back(name, t.detach());
  st::save((stdfs::path(dir) / kRouterFile).string(), tensors);
  const auto& first = named_.front().second;
  fs::write_json_atomic(stdfs::path(dir) / "mixture.json",
                        nlohmann::json{{"format", kFormat},
                                       {"schema_version", kSchemaVersion},
                                       {"options", config::to_json(opts_)},
                                       {"experts", dirs},
                                       {"clusters", clusters},
                                       {"hidden_size", first.size(1)},
                                       {"num_hidden_layers", num_layers_},
                                       {"trained_experts", opts_.train_experts}});
}

std::unique_ptr<ExpertMixture> ExpertMixture::load(const std::string& dir, const NamedLinears& base,
                                                   std::int64_t hidden_size, std::int64_t num_layers) {
  const auto meta_path = stdfs::path(dir) / "mixture.json";
  require(stdfs::exists(meta_path), "mixture: " + dir + " holds no mixture (mixture.json)");
  const auto meta = fs::read_json(meta_path);
  require(meta.value("format", std::string()) == kFormat && meta.value("schema_version", 0) == kSchemaVersion,
          "mixture: " + meta_path.string() + " is not a moin-mixture of schema_version " +
              std::to_string(kSchemaVersion));
  require(meta.value("hidden_size", std::int64_t{0}) == hidden_size &&
              meta.value("num_hidden_layers", std::int64_t{0}) == num_layers,
          "mixture: " + dir + " was trained for a model of another shape (mixture.json: hidden_size " +
              meta.value("hidden_size", nlohmann::json()).dump() + ", num_hidden_layers " +
              meta.value("num_hidden_layers", nlohmann::json()).dump() + "; this model: " +
              std::to_string(hidden_size) + ", " + std::to_string(num_layers) + ")");
  MixtureOptions opts;
  config::read_into(opts, meta.at("options"));
  auto set = std::make_shared<AdapterSet>(base);
  for (const auto& d : meta.at("experts")) {
    stdfs::path p = d.get<std::string>();
    if (p.is_relative()) p = stdfs::path(dir) / p;
    set->add(LoraAdapter::load(p.string(), base));  // on the base's device and dtype
  }
  auto m = std::make_unique<ExpertMixture>(set, hidden_size, num_layers, opts, 0);
  auto saved = st::load((stdfs::path(dir) / kRouterFile).string());
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : m->named_) {
    auto it = saved.find(name);
    require(it != saved.end() && it->second.sizes() == t.sizes(),
            "mixture: " + dir + "/" + kRouterFile + " has no tensor " + name + " of the expected shape");
    t.copy_(it->second);
    t.set_requires_grad(false);
  }
  return m;
}

}  // namespace moin
