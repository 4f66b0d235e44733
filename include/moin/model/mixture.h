// A learned token-level mixture of trained LoRA experts, the comparison the MoIN paper's reviewers asked
// for (a LoRA-MoE at equal cost): BTX mixes separately trained experts with a learned router per layer,
// BAM mixes attention too, PESC trains the adapter experts together with the router.
//
// Each decoder layer gets a router per mixed part (the MLP; with `attention`, the attention too): a linear
// map W [K, hidden] from the part's normed input x to K logits, one per expert. Per token
//
//   top-k (top_k > 0):  g = softmax over the k largest logits (Mixtral), 0 elsewhere
//   soft  (top_k = 0):  g = softmax over all K logits
//   every projection of the part adds  sum_e g_e * scaling_e * B_e A_e x
//
// The base stays frozen; training adds balance_coef times Switch Transformer's load-balancing loss
// K * sum_e f_e P_e (f_e: the share of top-k slots that went to e, P_e: e's mean router probability; 1 when
// balanced), averaged over the routed parts. Every expert runs on every token (a dense mixture over K small
// adapters); the weights make the unchosen ones contribute 0.
//
// A mixture folder (ExpertMixture::save):
//   mixture.json        {"format": "moin-mixture", "schema_version": 1, "options": MixtureOptions,
//                        "experts": [adapter folders, index e = expert e], "clusters": [cluster of expert e],
//                        "hidden_size", "num_hidden_layers", "trained_experts": bool}
//   router.safetensors  model.layers.<i>.mlp.router.weight (and .self_attn.router.weight), float32 [K, hidden]
//   experts/<k>/        the experts as trained with the router (only when train_experts; PEFT layout)
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "moin/core/error.h"
#include "moin/model/adapter_set.h"
#include "moin/model/lora_routing.h"

namespace moin {

struct LlamaConfig;

struct MixtureOptions {
  int top_k = 2;
  bool attention = false;
  double balance_coef = 0.01;
  bool train_experts = false;
  double init_std = 0.02;

  template <class V> void visit(V& v) {
    v("top_k", top_k, "experts mixed per token (0: soft, every expert by its softmax weight)");
    v("attention", attention, "mix the attention projections too, with a router of their own (BAM); false: the "
      "MLP only (BTX)");
    v("balance_coef", balance_coef, "weight of the load-balancing loss in training");
    v("train_experts", train_experts, "train the experts together with the routers (PESC), in the same budget");
    v("init_std", init_std, "standard deviation of the routers' initial weights (seeded)");
  }
  void validate() const {
    require(top_k >= 0, "mixture.top_k must be >= 0 (0: soft)");
    require(balance_coef >= 0.0, "mixture.balance_coef must be >= 0");
    require(init_std >= 0.0, "mixture.init_std must be >= 0");
  }
};

class ExpertMixture : public LayerRouter {
 public:
  // Fresh routers (normal(0, init_std), seeded, on the experts' device) over every adapter of `experts`.
  ExpertMixture(std::shared_ptr<AdapterSet> experts, std::int64_t hidden_size, std::int64_t num_layers,
                const MixtureOptions& opts, std::uint64_t seed);

  LoraRouting route(std::int64_t layer, Part part, const torch::Tensor& x) const override;

  // Switch Transformer's load-balancing loss, averaged over the parts routed with gradients since the last
  // call (a scalar 0 when none); clears them.
  torch::Tensor take_balance_loss();

  // The routers by checkpoint name (float32 [K, hidden], requiring grad when trainable).
  const std::vector<std::pair<std::string, torch::Tensor>>& routers() const { return named_; }
  const AdapterSet& experts() const { return *experts_; }
  int size() const { return experts_->size(); }
  const MixtureOptions& options() const { return opts_; }

  // Writes the folder described above. expert_dirs[e] and clusters[e] name expert e.
  void save(const std::string& dir, const std::vector<std::string>& expert_dirs,
            const std::vector<int>& clusters) const;
  // A saved mixture over `base`'s projections (its experts loaded from the folders it names, or from its own
  // experts/ when they were trained with it, on the base's device and dtype; routers in float32). UserError naming the file for a folder it cannot read.
  static std::unique_ptr<ExpertMixture> load(const std::string& dir, const NamedLinears& base,
                                             std::int64_t hidden_size, std::int64_t num_layers);

 private:
  const torch::Tensor& router(std::int64_t layer, Part part) const;
  std::shared_ptr<AdapterSet> experts_;
  MixtureOptions opts_;
  std::int64_t num_layers_ = 0;
  std::vector<std::pair<std::string, torch::Tensor>> named_;  // layer-major: MLP, then attention when mixed
  mutable std::vector<torch::Tensor> balance_;                // per routed part of the current step
};

}  // namespace moin
