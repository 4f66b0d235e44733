// `moin eval ppl`: reads the held-out data, routes each document by its prefix, scores every system on
// the rest, writes the reports and the plot (see perplexity.h).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>

#include "moin/core/format.h"
#include "moin/core/fs.h"
#include "moin/data/corpus.h"
#include "moin/data/tokenizer.h"
#include "moin/eval/llama_scorer.h"
#include "moin/eval/perplexity.h"
#include "moin/eval/plot.h"
#include "moin/model/adapter_set.h"
#include "moin/model/arrow.h"
#include "moin/model/mixture.h"
#include "moin/model/peer.h"
#include "moin/model/checkpoint.h"
#include "moin/route/routed_model.h"
#include "moin/route/router.h"

namespace moin {

namespace stdfs = std::filesystem;

PplReport run_eval_ppl(const PplOptions& opts) {
  require(!opts.data.empty(), "eval ppl: no --data");
  require(!opts.base.empty(), "eval ppl: no --base model");
  require(!opts.partition.empty(), "eval ppl: no --partition");
  require(!opts.experts.empty(), "eval ppl: no --experts folder");
  require(opts.prefix_tokens > 0, "eval ppl: prefix_tokens must be positive (the router reads the prefix only)");

  auto router = Router::load(opts.partition, opts.tokenizer);
  require(router.tokenizer() != nullptr,
          "eval ppl: no tokenizer (give --tokenizer, or a partition whose manifest names one)");
  const Tokenizer& tok = *router.tokenizer();
  const int K = router.num_experts();
  // Up front (config.json only): an id past the model's vocabulary would fail deep inside the embedding.
  const std::pair<std::string, const char*> models[] = {{opts.base, "base model"},
                                                        {opts.cpt, "continued-pre-training model"}};
  for (const auto& [model_dir, what] : models) {
    if (model_dir.empty()) continue;
    const auto vocab = LlamaConfig::load(model_dir).vocab_size;
    require(tok.vocab_size() <= vocab, "eval ppl: the tokenizer has " + std::to_string(tok.vocab_size()) +
                                           " tokens, more than the vocabulary of the " + what + " " + model_dir +
                                           " (" + std::to_string(vocab) + ")");
  }

  std::vector<std::string> texts, labels;
  IngestReport ingest;
  read_jsonl_docs(opts.data, opts.text_field, opts.label_field, opts.max_docs, texts, labels, nullptr, &ingest);
  spdlog::info("eval ppl: {}: {}", opts.data, ingest.summary());
  std::int64_t skipped = 0;
  auto docs = make_eval_docs(texts, labels, tok, opts, &skipped);
  spdlog::info("eval ppl: {} documents ({} too short for a {}-token prefix + {} scored tokens), {} experts",
               docs.size(), skipped, opts.prefix_tokens, opts.min_eval_tokens, K);

  // The router sees only each document's prefix text. c-BTM takes its nearest experts with their squared
  // L2 distances (spherical k-means ranks by 1 - <x, c> with unit vectors: d^2 = 2 (1 - <x, c>)).
  std::vector<std::string> prefixes;
  for (const auto& d : docs) prefixes.push_back(d.prefix_text);
  auto routes = router.route(prefixes, opts.cbtm ? std::min(opts.cbtm_top_k, K) : 1);
  for (std::size_t i = 0; i < docs.size(); ++i) {
    docs[i].routed = routes[i].expert();
    docs[i].nearest = routes[i].experts;
    for (float dist : routes[i].distances) docs[i].nearest_d2.push_back(router.spherical() ? 2.0f * dist : dist);
  }

  auto dtype = parse_dtype(opts.dtype);
  auto device = parse_device(opts.device);
  // Clusters without an expert route to the base; a missing or unfinished one is a failed job, reported.
  std::vector<std::string> dirs, status;
  std::map<std::string, std::vector<int>> without;
  for (const auto& f : find_experts(opts.experts, K)) {
    dirs.push_back(f.dir);
    status.push_back(f.status);
    if (!f.ok()) without[f.status].push_back(static_cast<int>(dirs.size()) - 1);
  }
  auto listed = [](const std::vector<int>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size() && i < 20; ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return v.size() > 20 ? s + ", ... (" + std::to_string(v.size()) + " in all)" : s;
  };
  for (const char* failed : {"unfinished", "missing"}) {
    auto it = without.find(failed);
    if (it == without.end()) continue;
    const std::string msg = std::to_string(it->second.size()) + " experts are " + failed + " in " + opts.experts +
                            " (clusters " + listed(it->second) + ")";
    require(!opts.require_all_experts, "eval ppl: " + msg + "; without --require-all-experts their documents "
                                       "would be scored with the base model");
    spdlog::warn("eval ppl: {}: their documents are scored with the base model", msg);
  }
  if (without.count("too_small"))
    spdlog::info("eval ppl: {} clusters have no expert (too few training tokens): their documents are scored with "
                 "the base model", without["too_small"].size());
  int dense_index = -1;
  if (!opts.dense.empty()) {
    require(stdfs::exists(stdfs::path(opts.dense) / "adapter_config.json"),
            "eval ppl: " + opts.dense + " holds no adapter (adapter_config.json)");
    dense_index = static_cast<int>(dirs.size());
    dirs.push_back(opts.dense);
  }
  auto base_llama = load_llama(opts.base, dtype, device);
  RoutedModel base(base_llama, dirs, opts.cache_size);
  LlamaScorer base_scorer(base);
  std::unique_ptr<RoutedModel> cpt_model;
  std::unique_ptr<LlamaScorer> cpt_scorer;
  if (!opts.cpt.empty()) {
    auto cpt_llama = load_llama(opts.cpt, dtype, device);
    cpt_model = std::make_unique<RoutedModel>(cpt_llama, std::vector<std::string>{}, 1);
    cpt_scorer = std::make_unique<LlamaScorer>(*cpt_model);
  }

  // Arrow: every expert on the device at once, mixed per token in each projection.
  std::vector<WholeSystem> whole;
  std::unique_ptr<ArrowLibrary> arrow;
  std::unique_ptr<LlamaScorer> arrow_scorer;
  if (opts.arrow) {
    AdapterSet library(base_llama->linears());
    for (int e = 0; e < K; ++e)
      if (status[static_cast<std::size_t>(e)] == "ok") library.add(LoraAdapter::load(dirs[static_cast<std::size_t>(e)], base_llama->linears()));
    arrow = std::make_unique<ArrowLibrary>(library, ArrowOptions{opts.arrow_top_k, opts.arrow_temperature});
    spdlog::info("eval ppl: Arrow over {} experts (top-{}, T = {})", arrow->size(), opts.arrow_top_k,
                 opts.arrow_temperature);
    arrow_scorer = std::make_unique<LlamaScorer>(base, LoraRouting::arrow_mix(*arrow));
    whole.push_back({"arrow", "Arrow (top-" + std::to_string(opts.arrow_top_k) + ", T=" +
                                  format_general(opts.arrow_temperature) + ")", arrow_scorer.get()});
  }
  // A learned mixture: its routers and every expert it mixes on the device at once.
  std::unique_ptr<ExpertMixture> mixture;
  std::unique_ptr<LlamaScorer> mixture_scorer;
  if (!opts.mixture.empty()) {
    const auto& mc = base_llama->config;
    mixture = ExpertMixture::load(opts.mixture, base_llama->linears(), mc.hidden_size, mc.num_hidden_layers);
    const auto& mo = mixture->options();
    spdlog::info("eval ppl: learned mixture of {} experts from {} (top-{}, {})", mixture->size(), opts.mixture,
                 mo.top_k, mo.attention ? "MLP and attention" : "MLP only");
    mixture_scorer = std::make_unique<LlamaScorer>(base, LoraRouting::layered(*mixture));
    whole.push_back({"mixture", "learned mixture (" + std::string(mo.top_k == 0 ? "soft" : "top-" + std::to_string(mo.top_k)) +
                                    (mo.attention ? ", MLP + attention" : ", MLP") +
                                    (mo.train_experts ? ", experts trained" : "") + ")",
                     mixture_scorer.get()});
  }

  std::unique_ptr<PeerLayers> peer;
  std::unique_ptr<LlamaScorer> peer_scorer;
  if (!opts.peer.empty()) {
    const auto& mc = base_llama->config;
    peer = PeerLayers::load(opts.peer, mc.hidden_size, mc.num_hidden_layers, device);
    const auto& po = peer->options();
    spdlog::info("eval ppl: PEER blocks from {} ({} parameters, {} experts per block, {} heads x top-{})", opts.peer,
                 peer->num_parameters(), static_cast<std::int64_t>(po.num_keys) * po.num_keys, po.heads, po.top_k);
    peer_scorer = std::make_unique<LlamaScorer>(base, LoraRouting::layered(*peer));
    whole.push_back({"peer", "PEER (" + std::to_string(static_cast<std::int64_t>(po.num_keys) * po.num_keys) +
                                 " experts x " + std::to_string(peer->layers().size()) + " layers, " +
                                 std::to_string(po.heads) + " heads x top-" + std::to_string(po.top_k) + ")",
                     peer_scorer.get()});
  }

  auto r = evaluate_perplexity(docs, base_scorer, K, dense_index, cpt_scorer.get(), opts, status, whole);
  r.skipped_short = skipped;
  r.ingest = ingest.to_json();
  const auto& cs = base.cache_stats();
  r.cache_stats = {{"capacity", opts.cache_size}, {"hits", cs.hits}, {"misses", cs.misses},
                   {"evictions", cs.evictions}, {"load_seconds", cs.load_seconds}};

  if (!opts.json.empty()) fs::write_json_atomic(opts.json, r.to_json());
  if (!opts.markdown.empty()) fs::write_atomic(opts.markdown, r.markdown());
  // The plot goes beside --json (or --markdown); without either there is no output folder, and it is not
  // dropped into the current directory.
  if (opts.plots && opts.json.empty() && opts.markdown.empty()) spdlog::info("eval ppl: no plot without --json");
  if (opts.plots && !(opts.json.empty() && opts.markdown.empty())) {
    std::string dir = stdfs::path(!opts.json.empty() ? opts.json : opts.markdown).parent_path().string();
    if (dir.empty()) dir = ".";
    std::vector<std::pair<std::string, double>> bars;
    for (const auto& s : r.systems) bars.emplace_back(s.name, s.overall.ppl());
    plot_bars((stdfs::path(dir) / "perplexity.png").string(), "Held-out perplexity per system", "perplexity", bars);
  }
  return r;
}

}  // namespace moin
