// Base model + LRU cache of expert adapters (see routed_model.h).
#include "moin/route/routed_model.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "moin/model/lora.h"

namespace moin {

namespace stdfs = std::filesystem;

RoutedModel::RoutedModel(LlamaForCausalLM base, std::vector<std::string> adapter_dirs, int cache_size)
    : base_(std::move(base)),
      dirs_(std::move(adapter_dirs)),
      cache_(static_cast<std::size_t>(std::max(cache_size, 1)), [this](int i) {
        spdlog::debug("adapter cache: loading {}", dirs_[static_cast<std::size_t>(i)]);
        return std::make_shared<LoraAdapter>(LoraAdapter::load(dirs_[static_cast<std::size_t>(i)], base_->linears()));
      }) {
  require(cache_size >= 1, "the adapter cache needs room for at least one adapter");
  base_->eval();
  base_->set_requires_grad(false);
}

RoutedModel::~RoutedModel() = default;

void RoutedModel::activate(int adapter) {
  require(adapter >= -1 && adapter < num_adapters(), "no adapter " + std::to_string(adapter));
  if (adapter == active_) return;
  auto linears = base_->linears();
  LoraAdapter::detach(linears);
  active_ = -1;
  if (adapter >= 0) {
    cache_.get(adapter)->attach(linears);
    active_ = adapter;
  }
}

std::vector<std::string> expert_adapter_dirs(const std::string& experts_dir, int k) {
  std::vector<std::string> out;
  for (int i = 0; i < k; ++i) {
    std::string found;
    for (const std::string& name : {std::to_string(i), "expert_" + std::to_string(i), "expert-" + std::to_string(i),
                                    "cluster_" + std::to_string(i)}) {
      auto p = stdfs::path(experts_dir) / name;
      if (stdfs::exists(p / "adapter_config.json")) {
        found = p.string();
        break;
      }
    }
    require(!found.empty(), "experts: no adapter for expert " + std::to_string(i) + " in " + experts_dir + " (" +
                                (stdfs::path(experts_dir) / std::to_string(i) / "adapter_config.json").string() +
                                " is missing)");
    out.push_back(found);
  }
  return out;
}

}  // namespace moin

#include "moin/data/tokenizer.h"
#include "moin/model/checkpoint.h"
#include "moin/route/router.h"

namespace moin {

std::string generate_routed(RoutedModel& model, const Router& router, const Tokenizer& tokenizer,
                            const std::string& prompt, const GenerateOptions& opts, int prefix_tokens, int* expert) {
  auto route = router.route_prefix({prompt}, prefix_tokens).at(0);
  require(route.expert() < model.num_adapters(), "the router chose expert " + std::to_string(route.expert()) +
                                                     " but only " + std::to_string(model.num_adapters()) +
                                                     " adapters are loaded");
  model.activate(route.expert());
  if (expert) *expert = route.expert();
  spdlog::info("generate: routed to expert {} (distance {:.4f})", route.expert(), route.distance());
  return generate_text(model.model(), tokenizer, prompt, opts);
}

std::string run_generate_routed(const GenerateRunOptions& opts, const std::string& partition_dir,
                                const std::string& experts_dir, int prefix_tokens) {
  opts.validate();
  auto router = Router::load(partition_dir, opts.tokenizer);
  require(router.tokenizer() != nullptr, "generate: no tokenizer (give --tokenizer, or a partition that names one)");
  RoutedModel model(load_llama(opts.model, parse_dtype(opts.dtype), parse_device(opts.device)),
                    expert_adapter_dirs(experts_dir, router.num_experts()), 1);
  return generate_routed(model, router, *router.tokenizer(), opts.prompt, opts.generation, prefix_tokens);
}

}  // namespace moin
