// moin logits: a checkpoint's outputs on given tokens, written for comparison with other implementations.
#include "moin/model/inspect.h"

#include "moin/core/error.h"
#include "moin/model/checkpoint.h"
#include "moin/model/lora.h"
#include "moin/model/safetensors_torch.h"

namespace moin {

void LogitsDumpOptions::validate() const {
  require(!model.empty(), "logits: model (--model DIR) is required");
  require(!output.empty(), "logits: output (--output FILE.safetensors) is required");
  require(!tokens.empty(), "logits: tokens (--tokens \"1 2 3\") must not be empty");
  parse_dtype(dtype);
}

void dump_logits(const LogitsDumpOptions& opts) {
  opts.validate();
  auto model = load_llama(opts.model, parse_dtype(opts.dtype), parse_device(opts.device));
  for (auto t : opts.tokens)
    require(t >= 0 && t < model->config.vocab_size,
            "logits: token " + std::to_string(t) + " outside the vocabulary of " + opts.model);
  if (!opts.adapter.empty()) {
    auto base = model->linears();
    LoraAdapter::load(opts.adapter, base).attach(base);  // on the model's device and dtype
  }
  torch::NoGradGuard no_grad;
  auto ids = torch::tensor(opts.tokens, torch::kInt64).view({1, -1}).to(model->device());
  std::vector<std::pair<std::string, torch::Tensor>> out;
  out.emplace_back("logits", model->forward(ids).to(torch::kCPU, torch::kFloat32));
  if (opts.hidden_layer != -1000)
    out.emplace_back("hidden_states", model->hidden_states(ids, opts.hidden_layer).to(torch::kCPU, torch::kFloat32));
  out.emplace_back("tokens", ids.to(torch::kCPU));
  st::save(opts.output, out);
}

}  // namespace moin
