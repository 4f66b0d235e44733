// PEER (He, 2024, "Mixture of A Million Experts"): product-key retrieval over N = n^2 single-neuron experts,
// here a block added beside the MLP of chosen layers of the frozen base, trained on the tokens the MoIN
// experts saw together, with as many trainable parameters as they have (the comparison of issue 15).
//
// For the MLP's normed input x of a chosen layer, each of h heads computes a query q = W_h x ([key_dim]),
// splits it in halves and scores them against two sets of n sub-keys; expert (i, j) scores
// <q1, c1_i> + <q2, c2_j>. The top-k experts of the n^2 come from the top-k of each half (the k x k
// candidate sums hold the exact top-k, so nothing is approximate). The block adds to the residual stream
//
//   sum over heads h, experts e in head h's top-k of  softmax_k(score)_e * gelu(<u_e, x>) * v_e
//
// with u_e, v_e in R^hidden (the down and up vectors of the single-neuron expert e). All heads of a layer
// share its experts and keys; v starts at 0, so an untrained block leaves the base as it was.
//
// A PEER folder (PeerLayers::save):
//   peer.json           {"format": "moin-peer", "schema_version": 1, "options": PeerOptions (num_keys
//                        resolved), "hidden_size", "num_hidden_layers", "layers": [...], "parameters": N}
//   peer.safetensors    model.layers.<i>.peer.{query [h*key_dim, hidden], keys1 [n, key_dim/2],
//                        keys2 [n, key_dim/2], down [n^2, hidden], up [n^2, hidden]} (float32)
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "moin/core/error.h"
#include "moin/model/lora_routing.h"

namespace moin {

struct PeerOptions {
  std::vector<int> layers;  // decoder layers that get a block (empty: every layer)
  int num_keys = 0;         // n; 0: the largest n whose parameters fit `params`
  std::int64_t params = 0;  // with num_keys 0: the trainable parameters to match (0: the experts')
  int heads = 4;
  int top_k = 8;
  int key_dim = 32;
  double init_std = 0.02;

  template <class V> void visit(V& v) {
    v("layers", layers, "decoder layers that get a PEER block beside their MLP (empty: every layer)");
    v("num_keys", num_keys, "sub-keys per half: n^2 single-neuron experts per layer (0: sized by params)");
    v("params", params, "with num_keys 0: trainable parameters to match, all blocks together (0: those of the "
      "experts being compared, read from the experts folder)");
    v("heads", heads, "query heads per block (each retrieves its own top_k experts)");
    v("top_k", top_k, "experts per head and token");
    v("key_dim", key_dim, "query and key width (even: split into two halves for the product keys)");
    v("init_std", init_std, "standard deviation of the initial queries, keys and down vectors (up vectors: 0)");
  }
  void validate() const {
    require(num_keys >= 0 && params >= 0, "peer.num_keys and peer.params must be >= 0");
    require(heads > 0 && top_k > 0, "peer.heads and peer.top_k must be positive");
    require(key_dim > 0 && key_dim % 2 == 0, "peer.key_dim must be positive and even");
    require(init_std > 0.0, "peer.init_std must be positive");
    for (int l : layers) require(l >= 0, "peer.layers must be layer indices (>= 0)");
  }
};

class PeerLayers : public LayerRouter {
 public:
  // Fresh blocks (seeded) for a model of `num_layers` layers of width `hidden`; opts.num_keys must be set
  // (see keys_for_params) and n^2 >= top_k.
  PeerLayers(std::int64_t hidden, std::int64_t num_layers, const PeerOptions& opts, std::uint64_t seed,
             torch::Device device = torch::kCPU);

  LoraRouting route(std::int64_t, Part, const torch::Tensor&) const override { return {}; }
  torch::Tensor beside_mlp(std::int64_t layer, const torch::Tensor& x) const override;

  // The exact top-k of the n^2 product-key scores <q1, keys1_i> + <q2, keys2_j> for each row of q
  // ([..., key_dim]): (scores [..., k], expert ids i * n + j [..., k] int64), best first.
  static std::pair<torch::Tensor, torch::Tensor> product_key_topk(const torch::Tensor& q, const torch::Tensor& keys1,
                                                                  const torch::Tensor& keys2, int k);
  // sum over j of gates[m, j] * gelu(<down[ids[m, j]], x[m]>) * up[ids[m, j]] for x [M, hidden], ids and gates
  // [M, J]. `dense`: every expert's activation by one matmul and the gates scattered over them (faster on a
  // CPU while n^2 is within some 32 x J); otherwise the J experts of each token are gathered.
  static torch::Tensor mix_experts(const torch::Tensor& x, const torch::Tensor& ids, const torch::Tensor& gates,
                                   const torch::Tensor& down, const torch::Tensor& up, bool dense);
  // The largest n whose blocks (on `blocks` layers) hold at most `params` parameters.
  static int keys_for_params(std::int64_t params, std::int64_t hidden, std::int64_t blocks, const PeerOptions& opts);
  static std::int64_t params_per_block(int n, std::int64_t hidden, const PeerOptions& opts);

  const std::vector<std::pair<std::string, torch::Tensor>>& parameters() const { return named_; }
  std::int64_t num_parameters() const;
  const PeerOptions& options() const { return opts_; }
  const std::vector<int>& layers() const { return layers_; }

  void save(const std::string& dir) const;
  // UserError naming the file for a folder it cannot read or a model of another shape.
  static std::unique_ptr<PeerLayers> load(const std::string& dir, std::int64_t hidden, std::int64_t num_layers,
                                          torch::Device device = torch::kCPU);

 private:
  struct Block {
    torch::Tensor query, keys1, keys2, down, up;
  };
  PeerOptions opts_;
  std::int64_t hidden_ = 0, num_layers_ = 0;
  std::vector<int> layers_;
  std::vector<int> block_of_layer_;  // -1: no block
  std::vector<Block> blocks_;
  std::vector<std::pair<std::string, torch::Tensor>> named_;
};

}  // namespace moin
