// LoRA adapters that live outside the base model (Hu et al., 2021; PEFT's layout on disk).
//
// An adapter holds, for each targeted projection of the base model ("model.layers.0.self_attn.q_proj"),
// two small matrices A [r, in] and B [out, r]; the projection computes y = x W^T + s * x A^T B^T with
// s = alpha / r (or alpha / sqrt(r) with rsLoRA). The base model is frozen and never owns adapter
// tensors: a forward call names the adapters it uses (an AdapterSet and a LoraRouting, see
// model/adapter_set.h), so experts are switched per call, mixed within a batch, and training updates only
// A and B.
//
//   auto base = model->linears();                       // name -> Linear, HF names
//   auto lora = LoraAdapter::create(base, opts);        // A Kaiming-uniform, B zeros (as PEFT)
//   AdapterSet set(base); set.add(lora);                // shares lora's tensors
//   auto all = LoraRouting::all(set, 0);  model->forward(tokens, nullptr, &all);  ... train lora.parameters() ...
//   lora.save("experts/3", "path/to/base");             // adapter_config.json + adapter_model.safetensors
//   auto e = LoraAdapter::load("experts/3", base);      // validated against the base, on its device
//
// On disk (PEFT, so `PeftModel.from_pretrained(llama, "experts/3")` loads our experts and we load theirs):
//   adapter_config.json        peft_type "LORA", r, lora_alpha, lora_dropout, target_modules, use_rslora, ...
//   adapter_model.safetensors  base_model.model.<module>.lora_A.weight [r, in], ...lora_B.weight [out, r]
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "moin/core/config.h"
#include "moin/model/linear.h"

namespace moin {

// The projections of a Llama block, by their HF names (the last component of a module's name).
const std::vector<std::string>& llama_projection_names();

// Every projection of a Llama with `layers` blocks (hidden width, key/value width, MLP width), by its full
// HF module name, with its in and out features: the shapes a LoRA adapter is made for.
struct ProjectionShape {
  std::string name;
  std::int64_t in_features, out_features;
};
std::vector<ProjectionShape> llama_projection_shapes(int layers, std::int64_t hidden, std::int64_t kv_width,
                                                     std::int64_t intermediate);

struct LoraOptions {
  int r = 16;
  double alpha = 32.0;
  double dropout = 0.0;
  std::vector<std::string> target_modules = llama_projection_names();
  bool use_rslora = false;
  std::int64_t seed = 0;

  template <class V> void visit(V& v) {
    v("r", r, "rank of each adapter matrix pair (A is [r, in], B is [out, r])");
    v("alpha", alpha, "scaling numerator: the update is scaled by alpha / r (alpha / sqrt(r) with use_rslora)");
    v("dropout", dropout, "dropout on the adapter's input while training (0 disables it)");
    v("target_modules", target_modules,
      "projections that get an adapter, by the last part of their name (q_proj, k_proj, v_proj, o_proj, "
      "gate_proj, up_proj, down_proj)");
    v("use_rslora", use_rslora, "rank-stabilised LoRA: scale by alpha / sqrt(r) instead of alpha / r");
    v("seed", seed, "seed of the random initialisation of A");
  }
  void validate() const;
  // alpha / r, or alpha / sqrt(r) with use_rslora.
  double scaling() const;
};

// The projections of a model, by name. Llama::linears() returns this; any list of Linears works.
using NamedLinears = std::vector<std::pair<std::string, Linear>>;

// Where a loaded (or moved) adapter's tensors go. Unset fields follow the base model's weights.
struct LoraPlacement {
  std::optional<torch::Device> device;
  std::optional<torch::ScalarType> dtype;
  bool trainable = false;  // load(): requires_grad on A and B (to continue training); create() always is
};

class LoraAdapter {
 public:
  struct Module {
    std::string name;  // "model.layers.0.self_attn.q_proj"
    torch::Tensor A;   // [r, in]
    torch::Tensor B;   // [out, r]
  };

  LoraAdapter() = default;

  // A fresh adapter for every module of `base` whose last name component is in opts.target_modules:
  // A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's kaiming_uniform_(a=sqrt(5))), drawn from opts.seed; B = 0, so
  // the adapted model starts equal to the base. Trainable; on the base weights' device and dtype unless
  // `where` says otherwise. UserError when a target matches no module of `base`.
  static LoraAdapter create(const NamedLinears& base, const LoraOptions& opts, const LoraPlacement& where = {});

  // Reads a PEFT LoRA folder and checks it against `base`: every tensor must name a module of the base
  // with the right shape, every targeted module must have both tensors, and the config must describe a
  // plain LoRA (no DoRA, bias, rank patterns, ...). UserError naming the folder and the tensor otherwise.
  // The tensors go to the device in one copy of the file's data section and are views into it.
  static LoraAdapter load(const std::string& dir, const NamedLinears& base, const LoraPlacement& where = {});

  // Writes `dir`/adapter_model.safetensors, then `dir`/adapter_config.json, each atomically.
  // base_model_name_or_path is recorded for PEFT (the base model's folder or hub name).
  void save(const std::string& dir, const std::string& base_model_name_or_path = "") const;

  // Draws B ~ N(0, std^2) (seeded, on the CPU), so the adapter changes the model: for checks against other
  // tools (a fresh adapter's B = 0 hides every mistake in B's layout or the scaling), not for training.
  void randomize_b(std::int64_t seed, double std = 0.1);

  // A and B of every module (what the optimizer gets).
  std::vector<torch::Tensor> parameters() const;
  std::int64_t num_parameters() const;
  void set_trainable(bool trainable);
  // Moves every tensor (keeping requires_grad). Add it to an AdapterSet again afterwards: a set holds the
  // old tensors.
  void to(torch::Device device, std::optional<torch::ScalarType> dtype = std::nullopt);

  // Folds the adapter into the base weights, W += s * B A (computed in fp32), and back, W -= s * B A.
  // Both without autograd: the fast path for serving one expert only. An AdapterSet refuses a merged
  // adapter (it would count twice).
  void merge(const NamedLinears& base);
  void unmerge(const NamedLinears& base);
  bool merged() const { return merged_; }

  const LoraOptions& options() const { return opts_; }
  double scaling() const { return opts_.scaling(); }
  const std::vector<Module>& modules() const { return modules_; }
  const std::string& base_model_name_or_path() const { return base_name_; }
  bool empty() const { return modules_.empty(); }

 private:
  LoraOptions opts_;
  std::vector<Module> modules_;
  std::string base_name_;
  bool merged_ = false;
};

// PEFT's tensor names of one module's adapter: base_model.model.<module>.lora_A.weight / .lora_B.weight.
std::string peft_lora_a_name(const std::string& module);
std::string peft_lora_b_name(const std::string& module);

// The adapter_config.json PEFT writes for these options (inference_mode true, task_type CAUSAL_LM).
nlohmann::json peft_adapter_config(const LoraOptions& opts, const std::string& base_model_name_or_path);

}  // namespace moin
