// Base model + LRU cache of expert adapters (see routed_model.h).
#include "moin/route/routed_model.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <map>

#include "moin/model/adapter_set.h"
#include "moin/core/fs.h"

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

AdapterBatch RoutedModel::batch(const std::vector<int>& per_row) {
  AdapterBatch b;
  b.set = std::make_shared<AdapterSet>(base_->linears());
  std::map<int, int> index;  // adapter -> its index in this batch's set
  std::vector<int> rows;
  rows.reserve(per_row.size());
  for (int a : per_row) {
    require(a >= -1 && a < num_adapters(), "no adapter " + std::to_string(a) + " (there are " +
                                               std::to_string(num_adapters()) + ")");
    if (a >= 0 && dirs_[static_cast<std::size_t>(a)].empty()) a = -1;  // a cluster without an expert: the base
    if (a >= 0 && !index.count(a)) index[a] = b.set->add(cache_.get(a));
    rows.push_back(a >= 0 ? index[a] : -1);
  }
  if (!index.empty()) b.routing = LoraRouting::rows(*b.set, rows, base_->device());
  return b;
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
  auto adapters = model.batch({route.expert()});
  if (expert) *expert = route.expert();
  if (adapters.get() == nullptr)
    spdlog::info("generate: routed to cluster {} (distance {:.4f}), which has no expert: the base model answers",
                 route.expert(), route.distance());
  else
    spdlog::info("generate: routed to expert {} (distance {:.4f})", route.expert(), route.distance());
  return generate_text(model.model(), tokenizer, prompt, opts, adapters.get());
}

std::string run_generate_routed(const GenerateRunOptions& opts, const std::string& partition_dir,
                                const std::string& experts_dir, int prefix_tokens) {
  opts.validate();
  auto router = Router::load(partition_dir, opts.tokenizer);
  require(router.tokenizer() != nullptr, "generate: no tokenizer (give --tokenizer, or a partition that names one)");
  std::vector<std::string> dirs;
  for (const auto& f : find_experts(experts_dir, router.num_experts())) dirs.push_back(f.dir);
  RoutedModel model(load_llama(opts.model, parse_dtype(opts.dtype), parse_device(opts.device)), dirs, 1);
  return generate_routed(model, router, *router.tokenizer(), opts.prompt, opts.generation, prefix_tokens);
}

}  // namespace moin
