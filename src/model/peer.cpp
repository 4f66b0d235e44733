// PEER blocks: product-key retrieval over single-neuron experts (see peer.h).
#include "moin/model/peer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/functional/activation.h>

#include <filesystem>
#include <torch/nn/functional/embedding.h>

#include <algorithm>
#include <cmath>

#include "moin/core/config.h"
#include "moin/core/fs.h"
#include "moin/model/safetensors_torch.h"

namespace moin {

namespace stdfs = std::filesystem;

namespace {

constexpr const char* kFormat = "moin-peer";
constexpr int kSchemaVersion = 1;
constexpr const char* kTensorFile = "peer.safetensors";

}  // namespace

std::int64_t PeerLayers::params_per_block(int n, std::int64_t hidden, const PeerOptions& o) {
  const std::int64_t N = static_cast<std::int64_t>(n) * n;
  return static_cast<std::int64_t>(o.heads) * o.key_dim * hidden + static_cast<std::int64_t>(n) * o.key_dim +
         2 * N * hidden;
}

int PeerLayers::keys_for_params(std::int64_t params, std::int64_t hidden, std::int64_t blocks, const PeerOptions& o) {
  require(blocks > 0, "peer: no layer gets a block");
  const std::int64_t per_block = params / blocks;
  int n = 0;
  while (params_per_block(n + 1, hidden, o) <= per_block) ++n;
  require(static_cast<std::int64_t>(n) * n >= o.top_k,
          "peer: " + std::to_string(params) + " parameters over " + std::to_string(blocks) +
              " blocks leave too few experts for top_k " + std::to_string(o.top_k) + " (n = " + std::to_string(n) +
              "); give more parameters, fewer layers or num_keys");
  return n;
}

PeerLayers::PeerLayers(std::int64_t hidden, std::int64_t num_layers, const PeerOptions& opts, std::uint64_t seed,
                       torch::Device device)
    : opts_(opts), hidden_(hidden), num_layers_(num_layers) {
  opts_.validate();
  const int n = opts_.num_keys;
  require(n > 0, "peer: num_keys is not set");
  require(static_cast<std::int64_t>(n) * n >= opts_.top_k,
          "peer: top_k " + std::to_string(opts_.top_k) + " exceeds the " + std::to_string(n * n) + " experts");
  layers_ = opts_.layers;
  if (layers_.empty())
    for (std::int64_t l = 0; l < num_layers; ++l) layers_.push_back(static_cast<int>(l));
  std::sort(layers_.begin(), layers_.end());
  layers_.erase(std::unique(layers_.begin(), layers_.end()), layers_.end());
  block_of_layer_.assign(static_cast<std::size_t>(num_layers), -1);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto normal = [&](std::int64_t rows, std::int64_t cols, double std) {
    // Drawn on the CPU in float32 so the same seed gives the same blocks on every device.
    return at::normal(0.0, std, {rows, cols}, gen, torch::TensorOptions().dtype(torch::kFloat32))
        .to(device)
        .set_requires_grad(true);
  };
  const std::int64_t N = static_cast<std::int64_t>(n) * n, half = opts_.key_dim / 2;
  for (int l : layers_) {
    require(l < num_layers, "peer: layer " + std::to_string(l) + " is not in a model of " +
                                std::to_string(num_layers) + " layers");
    block_of_layer_[static_cast<std::size_t>(l)] = static_cast<int>(blocks_.size());
    Block b;
    b.query = normal(static_cast<std::int64_t>(opts_.heads) * opts_.key_dim, hidden, opts_.init_std);
    b.keys1 = normal(n, half, opts_.init_std);
    b.keys2 = normal(n, half, opts_.init_std);
    b.down = normal(N, hidden, opts_.init_std);
    b.up = torch::zeros({N, hidden}, torch::TensorOptions().dtype(torch::kFloat32).device(device)).set_requires_grad(true);
    const std::string p = "model.layers." + std::to_string(l) + ".peer.";
    named_.emplace_back(p + "query", b.query);
    named_.emplace_back(p + "keys1", b.keys1);
    named_.emplace_back(p + "keys2", b.keys2);
    named_.emplace_back(p + "down", b.down);
    named_.emplace_back(p + "up", b.up);
    blocks_.push_back(b);
  }
}

std::pair<torch::Tensor, torch::Tensor> PeerLayers::product_key_topk(const torch::Tensor& q, const torch::Tensor& keys1,
                                                                     const torch::Tensor& keys2, int k) {
  const std::int64_t half = keys1.size(1), n = keys1.size(0);
  require(q.size(-1) == 2 * half && keys2.size(0) == n && keys2.size(1) == half,
          "peer: queries and keys disagree in width");
  const std::int64_t kk = std::min<std::int64_t>(k, n);
  require(kk * kk >= k, "peer: top_k exceeds the experts");
  auto [v1, i1] = q.narrow(-1, 0, half).matmul(keys1.t()).topk(kk, -1);  // [..., kk]
  auto [v2, i2] = q.narrow(-1, half, half).matmul(keys2.t()).topk(kk, -1);
  // Every pair of the two top-kk lists; the true top-k of all n^2 sums is among them.
  auto sums = (v1.unsqueeze(-1) + v2.unsqueeze(-2)).flatten(-2);  // [..., kk * kk]
  auto [scores, flat] = sums.topk(k, -1);
  auto a = i1.gather(-1, flat.div(kk, "floor")), b = i2.gather(-1, flat.remainder(kk));
  return {scores, a * n + b};
}

torch::Tensor PeerLayers::beside_mlp(std::int64_t layer, const torch::Tensor& x) const {
  if (layer < 0 || layer >= num_layers_) return {};
  const int bi = block_of_layer_[static_cast<std::size_t>(layer)];
  if (bi < 0) return {};
  namespace F = torch::nn::functional;
  const Block& b = blocks_[static_cast<std::size_t>(bi)];
  auto xf = x.to(torch::kFloat32);
  auto sizes = xf.sizes().vec();  // [..., hidden]
  auto flat_x = xf.reshape({-1, hidden_});  // [M, hidden]
  const std::int64_t M = flat_x.size(0), H = opts_.heads;
  auto q = flat_x.matmul(b.query.t()).view({M, H, opts_.key_dim});
  auto [scores, ids] = product_key_topk(q, b.keys1, b.keys2, opts_.top_k);  // [M, H, k]
  auto gates = torch::softmax(scores, -1).view({M, -1});
  const std::int64_t J = gates.size(1);
  return mix_experts(flat_x, ids.view({M, -1}), gates, b.down, b.up, b.down.size(0) <= 32 * J).view(sizes);
}

torch::Tensor PeerLayers::mix_experts(const torch::Tensor& x, const torch::Tensor& ids, const torch::Tensor& gates,
                                      const torch::Tensor& down, const torch::Tensor& up, bool dense) {
  namespace F = torch::nn::functional;
  if (dense) {
    // An expert two heads both chose gets the sum of their gates: the same as adding it twice.
    auto w = torch::zeros({x.size(0), down.size(0)}, gates.options()).scatter_add(1, ids, gates);
    return (w * F::gelu(x.matmul(down.t()))).matmul(up);
  }
  auto d = F::embedding(ids, down);  // [M, J, hidden]
  auto act = F::gelu((d * x.unsqueeze(1)).sum(-1));
  return ((gates * act).unsqueeze(-1) * F::embedding(ids, up)).sum(1);
}

std::int64_t PeerLayers::num_parameters() const {
  std::int64_t n = 0;
  for (const auto& [name, t] : named_) n += t.numel();
  return n;
}

void PeerLayers::save(const std::string& dir) const {
  fs::ensure_dir(dir);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& [name, t] : named_) tensors.emplace_back(name, t.detach());
  st::save((stdfs::path(dir) / kTensorFile).string(), tensors);
  PeerOptions o = opts_;
  o.layers = layers_;
  fs::write_json_atomic(stdfs::path(dir) / "peer.json",
                        nlohmann::json{{"format", kFormat},
                                       {"schema_version", kSchemaVersion},
                                       {"options", config::to_json(o)},
                                       {"hidden_size", hidden_},
                                       {"num_hidden_layers", num_layers_},
                                       {"layers", layers_},
                                       {"parameters", num_parameters()}});
}

std::unique_ptr<PeerLayers> PeerLayers::load(const std::string& dir, std::int64_t hidden, std::int64_t num_layers,
                                             torch::Device device) {
  const auto meta_path = stdfs::path(dir) / "peer.json";
  require(stdfs::exists(meta_path), "peer: " + dir + " holds no PEER blocks (peer.json)");
  const auto meta = fs::read_json(meta_path);
  require(meta.value("format", std::string()) == kFormat && meta.value("schema_version", 0) == kSchemaVersion,
          "peer: " + meta_path.string() + " is not a moin-peer of schema_version " + std::to_string(kSchemaVersion));
  require(meta.value("hidden_size", std::int64_t{0}) == hidden && meta.value("num_hidden_layers", std::int64_t{0}) == num_layers,
          "peer: " + dir + " was trained for a model of another shape (peer.json: hidden_size " +
              meta.value("hidden_size", nlohmann::json()).dump() + ", num_hidden_layers " +
              meta.value("num_hidden_layers", nlohmann::json()).dump() + "; this model: " + std::to_string(hidden) +
              ", " + std::to_string(num_layers) + ")");
  PeerOptions opts;
  config::read_into(opts, meta.at("options"));
  auto p = std::make_unique<PeerLayers>(hidden, num_layers, opts, 0, device);
  auto saved = st::load((stdfs::path(dir) / kTensorFile).string());
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : p->named_) {
    auto it = saved.find(name);
    require(it != saved.end() && it->second.sizes() == t.sizes(),
            "peer: " + dir + "/" + kTensorFile + " has no tensor " + name + " of the expected shape");
    t.copy_(it->second);
    t.set_requires_grad(false);
  }
  return p;
}

}  // namespace moin
