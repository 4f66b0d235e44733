// moin logits: a checkpoint's outputs on given tokens, written for comparison with other implementations.
#include "moin/model/inspect.h"

#include <memory>

#include "moin/core/error.h"
#include "moin/model/autocast.h"
#include "moin/model/checkpoint.h"
#include "moin/model/adapter_set.h"
#include "moin/model/arrow.h"
#include "moin/model/mixture.h"
#include "moin/model/peer.h"
#include "moin/model/safetensors_torch.h"

namespace moin {

void LogitsDumpOptions::validate() const {
  require(!model.empty(), "logits: model (--model DIR) is required");
  require(!output.empty(), "logits: output (--output FILE.safetensors) is required");
  require(!tokens.empty(), "logits: tokens (--tokens \"1 2 3\") must not be empty");
  parse_dtype(dtype);
  require(!adapter_grads || !adapter.empty(), "logits: adapter_grads needs an adapter (--adapter DIR)");
  require(!adapter_grads || tokens.size() >= 2, "logits: adapter_grads needs at least 2 tokens");
  require(arrow.empty() || (adapter.empty() && !adapter_grads),
          "logits: arrow takes the place of --adapter (and has no gradients to write)");
  require(mixture.empty() || (adapter.empty() && arrow.empty() && !adapter_grads),
          "logits: mixture takes the place of --adapter and --arrow (and has no gradients to write)");
  require(peer.empty() || (adapter.empty() && arrow.empty() && mixture.empty() && !adapter_grads),
          "logits: peer takes the place of --adapter, --arrow and --mixture (and has no gradients to write)");
}

void dump_logits(const LogitsDumpOptions& opts) {
  opts.validate();
  auto model = load_llama(opts.model, parse_dtype(opts.dtype), parse_device(opts.device));
  for (auto t : opts.tokens)
    require(t >= 0 && t < model->config.vocab_size,
            "logits: token " + std::to_string(t) + " outside the vocabulary of " + opts.model);
  model->set_requires_grad(false);  // only the adapter's gradients are asked for
  LoraAdapter adapter;
  AdapterSet adapters(model->linears());
  LoraRouting lora;
  if (!opts.adapter.empty()) {
    LoraPlacement where;
    where.trainable = opts.adapter_grads;
    adapter = LoraAdapter::load(opts.adapter, model->linears(), where);  // on the model's device and dtype
    lora = LoraRouting::all(adapters, adapters.add(adapter));
  }
  std::unique_ptr<ArrowLibrary> arrow;
  if (!opts.arrow.empty()) {
    for (const auto& dir : opts.arrow) adapters.add(LoraAdapter::load(dir, model->linears()));
    arrow = std::make_unique<ArrowLibrary>(adapters, ArrowOptions{opts.arrow_top_k, opts.arrow_temperature});
    lora = LoraRouting::arrow_mix(*arrow);
  }
  std::unique_ptr<ExpertMixture> mixture;
  if (!opts.mixture.empty()) {
    mixture = ExpertMixture::load(opts.mixture, model->linears(), model->config.hidden_size,
                                  model->config.num_hidden_layers);
    lora = LoraRouting::layered(*mixture);
  }
  std::unique_ptr<PeerLayers> peer;
  if (!opts.peer.empty()) {
    peer = PeerLayers::load(opts.peer, model->config.hidden_size, model->config.num_hidden_layers, model->device());
    lora = LoraRouting::layered(*peer);
  }
  auto ids = torch::tensor(opts.tokens, torch::kInt64).view({1, -1}).to(model->device());
  std::vector<std::pair<std::string, torch::Tensor>> out;
  const auto T = ids.size(1);
  if (opts.adapter_grads) {
    torch::Tensor logits;
    {
      AutocastBf16 ac(model->device(), opts.autocast_bf16);
      logits = model->forward(ids, nullptr, &lora);
    }
    auto loss = cross_entropy(logits.narrow(1, 0, T - 1), ids.narrow(1, 1, T - 1));
    loss.backward();
    out.emplace_back("logits", logits.detach().to(torch::kCPU, torch::kFloat32));
    out.emplace_back("loss", loss.detach().to(torch::kCPU, torch::kFloat32).view({1}));
    for (const auto& m : adapter.modules()) {
      // The names PEFT gives the adapter's tensors, so a reference can match them one to one.
      const std::string key = "grad.base_model.model." + m.name;
      out.emplace_back(key + ".lora_A.weight", m.A.grad().to(torch::kCPU, torch::kFloat32));
      out.emplace_back(key + ".lora_B.weight", m.B.grad().to(torch::kCPU, torch::kFloat32));
    }
  } else {
    torch::NoGradGuard no_grad;
    AutocastBf16 ac(model->device(), opts.autocast_bf16);
    out.emplace_back("logits", model->forward(ids, nullptr, &lora).to(torch::kCPU, torch::kFloat32));
    if (opts.hidden_layer != -1000)
      out.emplace_back("hidden_states", model->hidden_states(ids, opts.hidden_layer).to(torch::kCPU, torch::kFloat32));
  }
  out.emplace_back("tokens", ids.to(torch::kCPU));
  st::save(opts.output, out);
}

}  // namespace moin
