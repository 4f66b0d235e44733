// Which LoRA adapters one forward call uses, row by row or token by token. The base model holds no adapter
// state: every call names its adapters (an AdapterSet, model/adapter_set.h) and how its rows or tokens use
// them, so one batch can mix experts, two calls can use different experts, and a token-level mixture of
// experts runs through the same projections.
//
//   LoraRouting::all(set, 3)                  every row uses adapter 3 (the fast path: two plain matmuls)
//   LoraRouting::rows(set, {0, -1, 5, 0}, d)  row b uses adapter per_row[b]; -1 is the bare base
//   LoraRouting::mixture(set, ids, weights)   token (b, t) adds sum_j weights[b,t,j] * adapter ids[b,t,j]
//   LoraRouting::arrow_mix(library)           every projection routes each token by Arrow (model/arrow.h)
//   LoraRouting::layered(router)              each decoder layer asks `router` for its routing, from the
//                                             layer's own hidden state (a learned mixture, model/mixture.h)
//
// Rows naming several adapters run as Punica's BGMV does, with batched matmuls: each projection stacks the
// A and B of the adapters present, gathers every row's pair and runs two bmm's, so the number of kernels
// does not grow with the number of adapters (the pair of a base row is scaled by 0); rows in equal
// contiguous blocks, one adapter each (a packed training step), need no gather: one bmm over the blocks
// per matmul. Where the adapters
// present differ in rank or targets, rows are grouped by adapter instead (SGMV's segments, as matmuls):
// each adapter gathers its rows, runs x A^T B^T on them and adds the result back. A mixture runs each
// adapter it names over the whole batch and weights the result per token.
#pragma once
#include <torch/types.h>

#include <vector>

namespace moin {

class AdapterSet;
class ArrowLibrary;
struct LoraRouting;

// Routing decided inside the forward pass: each decoder layer passes the normed input of its attention and
// of its MLP, and that part's projections use the routing returned (empty: the bare base). A layer may
// also get a block of its own beside the MLP (a PEER layer): its output joins the residual stream.
class LayerRouter {
 public:
  enum class Part { Attention, Mlp };
  virtual ~LayerRouter() = default;
  // x: [B, T, hidden], the input of the part's projections (after its RMSNorm).
  virtual LoraRouting route(std::int64_t layer, Part part, const torch::Tensor& x) const = 0;
  // A term added to the residual stream beside the MLP of `layer`, from the MLP's normed input x;
  // undefined: none.
  virtual torch::Tensor beside_mlp(std::int64_t /*layer*/, const torch::Tensor& /*x*/) const { return {}; }
};

struct LoraRouting {
  struct Group {
    int adapter = -1;      // index into the set
    torch::Tensor rows;    // int64 [n] row indices on the model's device; undefined: every row
    torch::Tensor weight;  // [B, T, 1] weight of each token (mixtures); undefined: 1
  };
  const AdapterSet* set = nullptr;
  std::vector<Group> groups;
  // rows() over several adapters, for the batched path: the adapters present, each row's position among
  // them (0 for a base row) and its weight (1, or 0 for a base row), on the model's device.
  std::vector<int> present;
  torch::Tensor row_slot;   // int64 [B]
  torch::Tensor row_scale;  // float32 [B]
  // Set when the rows come in equal contiguous blocks, each on its own adapter and none on the base (a
  // packed training step): the adapter of each block, in order. The batched path then needs no gathers.
  std::vector<int> block_adapters;
  // Arrow: each projection picks its adapters per token itself (groups are then empty).
  const ArrowLibrary* arrow = nullptr;
  // A layer router: the decoder layers replace this routing with the router's, part by part.
  const LayerRouter* layered_by = nullptr;

  bool empty() const { return arrow == nullptr && layered_by == nullptr && (set == nullptr || groups.empty()); }

  static LoraRouting all(const AdapterSet& set, int adapter);
  // per_row[b] in [-1, set.size()); `device` is the model's (where the row indices go).
  static LoraRouting rows(const AdapterSet& set, const std::vector<int>& per_row, torch::Device device);
  // ids: int64 [B, T, k] (-1: no adapter), weights: [B, T, k] floating, on the model's device. The weights
  // may require grad (a learned router); the result is differentiable in them.
  static LoraRouting mixture(const AdapterSet& set, const torch::Tensor& ids, const torch::Tensor& weights);
  // Arrow's zero-shot token-level routing over the library's adapters (the library must outlive the call).
  static LoraRouting arrow_mix(const ArrowLibrary& library);
  // Routing chosen per decoder layer by `router` (which must outlive the call).
  static LoraRouting layered(const LayerRouter& router);
};

}  // namespace moin
