// `moin eval ppl`: reads the held-out data, routes each document by its prefix, scores every system on
// the rest, writes the reports and the plot (see perplexity.h).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>

#include "moin/core/format.h"
#include "moin/core/hash.h"
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
#include "moin/partition/layout.h"
#include "moin/route/routed_model.h"
#include "moin/route/router.h"

namespace moin {

namespace stdfs = std::filesystem;

namespace {

// Perplexities on another tokenizer's ids would be numbers about nothing: the tokenizer eval reads with must
// be the one the partition was tokenised with (its manifest's sha256) and, when the base folder holds a
// tokenizer file, that one too. The trainer refuses the same mismatch.
void check_same_tokenizer(const std::string& tok_path, const PplOptions& opts) {
  if (tok_path.empty() || !stdfs::is_regular_file(tok_path)) return;
  const std::string sha = sha256_file(tok_path);
  const nlohmann::json manifest = PartitionLayout(opts.partition).read_manifest();
  std::string partition_sha;
  if (manifest.contains("tokenizer") && manifest["tokenizer"].is_object())
    partition_sha = manifest["tokenizer"].value("sha256", std::string());
  require(partition_sha.empty() || partition_sha == sha,
          "eval ppl: the tokenizer " + tok_path + " (sha256 " + sha.substr(0, 12) + "...) is not the one the partition " +
              opts.partition + " was tokenised with (sha256 " + partition_sha.substr(0, 12) +
              "...): give that one with --tokenizer, or leave --tokenizer out to use the partition's");
  const std::string base_tok = Tokenizer::find_in_model_dir(opts.base);
  if (base_tok.empty()) return;
  const std::string base_sha = sha256_file(base_tok);
  require(base_sha == sha, "eval ppl: the tokenizer " + tok_path + " (sha256 " + sha.substr(0, 12) +
                               "...) is not the base model's " + base_tok + " (sha256 " + base_sha.substr(0, 12) + "...)");
}

}  // namespace

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

  check_same_tokenizer(opts.tokenizer.empty() ? PartitionLayout(opts.partition).tokenizer() : opts.tokenizer, opts);

  std::vector<std::string> texts, labels;
  IngestReport ingest;
  read_jsonl_docs(opts.data, opts.text_field, opts.label_field, opts.max_docs, texts, labels, nullptr, &ingest);
  spdlog::info("eval ppl: {}: {}", opts.data, ingest.summary());
  std::int64_t skipped = 0;
  auto docs = make_eval_docs(texts, labels, tok, opts, &skipped);
  spdlog::info("eval ppl: {} documents ({} too short for a {}-token prefix + {} scored tokens), {} experts",
               docs.size(), skipped, opts.prefix_tokens, opts.min_eval_tokens, K);

  auto dtype = parse_dtype(opts.dtype);
  auto device = parse_device(opts.device);
  // A cluster too small for an expert is part of the design: its documents go to the base, for every system.
  // A missing or unfinished expert is a failed job: its cluster is left out of every system alike (the
  // router, random and c-BTM choose among the other clusters, the oracle among the trained experts), so
  // no system is compared on a different set of experts.
  std::vector<std::string> dirs, status;
  std::map<std::string, std::vector<int>> without;
  std::vector<char> left_out(static_cast<std::size_t>(K), 0);
  for (const auto& f : find_experts(opts.experts, K)) {
    dirs.push_back(f.dir);
    status.push_back(f.status);
    if (!f.ok()) without[f.status].push_back(static_cast<int>(dirs.size()) - 1);
    if (expert_left_out(f.status)) left_out[dirs.size() - 1] = 1;
  }
  auto listed = [](const std::vector<int>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size() && i < 20; ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return v.size() > 20 ? s + ", ... (" + std::to_string(v.size()) + " in all)" : s;
  };
  for (const auto& [why, clusters] : without) {
    if (!expert_left_out(why)) continue;
    const std::string msg = std::to_string(clusters.size()) + " experts are " + why + " in " + opts.experts +
                            " (clusters " + listed(clusters) + ")";
    require(!opts.require_all_experts, "eval ppl: " + msg + "; without --require-all-experts their clusters "
                                       "would be left out of every system");
    spdlog::warn("eval ppl: {}: their clusters are left out of every system (routing, random, c-BTM, oracle)", msg);
  }
  if (without.count("too_small"))
    spdlog::info("eval ppl: {} clusters have no expert (too few training tokens): every system scores their documents "
                 "with the base model", without["too_small"].size());
  const int n_left_out = static_cast<int>(std::count(left_out.begin(), left_out.end(), 1));
  require(n_left_out < K, "eval ppl: none of the " + std::to_string(K) + " experts in " + opts.experts + " is trained");

  // The router sees only each document's prefix text. c-BTM takes its nearest experts with their squared
  // L2 distances (spherical k-means ranks by 1 - <x, c> with unit vectors: d^2 = 2 (1 - <x, c>)). The
  // clusters left out are dropped from each ranking, so the nearest of the others comes first.
  std::vector<std::string> prefixes;
  for (const auto& d : docs) prefixes.push_back(d.prefix_text);
  const int want = opts.cbtm ? std::min(opts.cbtm_top_k, K - n_left_out) : 1;
  auto routes = router.route(prefixes, std::min(K, want + n_left_out));
  for (std::size_t i = 0; i < docs.size(); ++i) {
    for (std::size_t j = 0; j < routes[i].experts.size() && static_cast<int>(docs[i].nearest.size()) < want; ++j) {
      const int e = routes[i].experts[j];
      if (left_out[static_cast<std::size_t>(e)]) continue;
      docs[i].nearest.push_back(e);
      const float dist = routes[i].distances[j];
      docs[i].nearest_d2.push_back(router.spherical() ? 2.0f * dist : dist);
    }
    docs[i].routed = docs[i].nearest.front();
  }
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
    std::vector<std::pair<std::string, double>> bars, change;
    const PplSystem* base_row = r.find("base");
    for (const auto& s : r.systems) {
      bars.emplace_back(s.name, s.overall.ppl());
      // Against the base on the same documents (the oracle's sample has its own base figure).
      const PplCell& ref = s.base_same_docs.docs > 0 ? s.base_same_docs : base_row->overall;
      if (s.key != "base") change.emplace_back(s.name, 100.0 * (s.overall.ppl() / ref.ppl() - 1.0));
    }
    plot_bars((stdfs::path(dir) / "perplexity.png").string(), "Held-out perplexity per system", "perplexity", bars);
    // Bars of 56 to 60 from 0 look equal: the change against the base shows the differences that matter.
    BarStyle rel;
    rel.from_zero = false;
    rel.decimals = 1;
    rel.suffix = "%";
    rel.min_span = 2.0;  // percent: a change of 0.01% is not drawn as a tall bar
    plot_bars((stdfs::path(dir) / "perplexity_change.png").string(),
              "Held-out perplexity: change against the base (lower is better)", "change in perplexity (%)", change, rel);
    // Per cluster: one line per system, the change against the base on that cluster's documents.
    std::vector<double> xs;
    for (const auto& [k, c] : base_row->per_cluster) xs.push_back(k);
    std::vector<std::pair<std::string, std::vector<double>>> series;
    for (const auto& s : r.systems) {
      if (s.key == "base" || s.key == "oracle") continue;  // the oracle's sample leaves clusters without documents
      std::vector<double> y;
      for (const auto& [k, c] : base_row->per_cluster) {
        auto it = s.per_cluster.find(k);
        y.push_back(it == s.per_cluster.end() ? 0.0 : 100.0 * (it->second.ppl() / c.ppl() - 1.0));
      }
      series.emplace_back(s.name, y);
    }
    if (xs.size() > 1 && !series.empty())
      plot_lines((stdfs::path(dir) / "perplexity_change_per_cluster.png").string(),
                 "Change in perplexity against the base, per routed cluster", "cluster", "change in perplexity (%)", xs,
                 series);
  }
  return r;
}

}  // namespace moin
