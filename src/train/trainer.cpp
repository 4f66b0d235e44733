#include "moin/train/trainer.h"

#include <ATen/Context.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <memory>
#include <thread>

#include "moin/core/clock.h"
#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "moin/core/hash.h"
#include "moin/core/log.h"
#include "moin/core/progress.h"
#include "moin/core/strings.h"
#include "moin/model/autocast.h"
#include "moin/model/checkpoint.h"
#include "moin/data/tokenizer.h"
#include "moin/model/adapter_set.h"
#include "moin/model/mixture.h"
#include "moin/model/peer.h"
#include "moin/train/data.h"
#include "moin/train/experts_layout.h"
#include "moin/train/flat_adamw.h"
#include "moin/train/partition_layout.h"
#include "moin/train/perf.h"
#include "moin/train/schedule.h"
#include "moin/train/train_checkpoint.h"

namespace moin {

namespace stdfs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// Keys of the options that may change between a run and its resumption (they do not affect the result).
bool resumable_key(const std::string& k) {
  static const char* keys[] = {"output",        "device",      "num_threads",       "log_every",
                               "eval_every",    "eval_tokens", "checkpoint_every",  "keep_checkpoints",
                               "peak_tflops",   "fault_nan_at_step", "fault_sleep_s", "partition", "base",
                               "keep_final_checkpoint", "min_train_tokens", "clusters"};
  for (const char* key : keys)
    if (k == key) return true;
  return false;
}

// Rewrites metrics.jsonl keeping only the lines of steps <= step (a resumed run repeats the rest).
void truncate_metrics(const stdfs::path& path, std::int64_t step) {
  if (!stdfs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      auto j = json::parse(line);
      if (j.value("step", std::int64_t{0}) <= step) kept += line + "\n";
    } catch (const std::exception&) {
      // A line cut short by the kill: dropped.
    }
  }
  fs::write_atomic(path, kept);
}

struct ClusterValid {
  int cluster;
  torch::Tensor sequences;  // [n, T + 1]
};

// The tokenizer that made the shards must be the base model's (when both are known).
void check_tokenizer(const TrainOptions& o, const DocumentSet& docs) {
  if (o.base.empty()) return;
  stdfs::path tok = stdfs::path(o.base) / Tokenizer::kSentencePieceFile;
  if (!stdfs::exists(tok)) return;
  std::string base_sha;
  for (const auto& shard : docs.shards()) {
    const auto& want = shard.info().tokenizer_sha256;
    if (want.empty()) continue;
    if (base_sha.empty()) base_sha = sha256_file(tok.string());
    require(want == base_sha, "the partition's token shards were made with another tokenizer than the base "
                              "model's " + tok.string() + " (sha256 " + want.substr(0, 12) + "... vs " +
                                  base_sha.substr(0, 12) + "...)");
  }
}

// What a resumed run must share with its checkpoint besides the options: the base weights and the token
// shards it reads. Their paths may change between the two (a moved folder); their content may not, or the
// run would silently train its first steps on one and the rest on another.
std::string base_fingerprint(const std::string& base) {
  std::vector<std::string> files;
  for (const auto& e : stdfs::directory_iterator(base)) {
    const std::string name = e.path().filename().string();
    if (name == "config.json" || name == "model.safetensors.index.json" || ends_with(name, ".safetensors"))
      files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files_fingerprint(files);
}

// base_fp: base_fingerprint(o.base), computed once for all the runs of a pack.
json input_fingerprints(const TrainOptions& o, const std::vector<int>& clusters, const std::string& base_fp,
                        const PartitionShards& partition) {
  json fp = json::object();
  if (!o.base.empty()) fp["base"] = base_fp;
  std::vector<std::string> shards;
  for (int k : clusters)
    for (const char* split : {"train", "valid"}) {
      const std::string stem = token_shard_stem(partition.shard(k, split).stem);
      if (stem.empty()) continue;
      for (const char* ext : {".json", ".idx", ".bin"})
        if (stdfs::exists(stem + ext)) shards.push_back(stem + ext);
    }
  fp["partition"] = files_fingerprint(shards);
  return fp;
}

std::string describe_value(double x) { return std::isnan(x) ? "NaN" : "infinite"; }

// The run's AdamW hyperparameters, with weight decay wd.
torch::optim::AdamWOptions adamw_options(const TrainOptions& o, double wd) {
  return torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(wd);
}

}  // namespace

std::unique_ptr<torch::optim::AdamW> make_adamw(const NamedTensors& trainable, const TrainOptions& o) {
  auto options = [&](double wd) { return std::make_unique<torch::optim::AdamWOptions>(adamw_options(o, wd)); };
  // No weight decay on 1-D parameters (norms, biases): decaying them toward 0 only hurts.
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& [name, t] : trainable) (t.dim() >= 2 ? decay : no_decay).push_back(t);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!decay.empty()) groups.emplace_back(decay, options(o.weight_decay));
  if (!no_decay.empty()) groups.emplace_back(no_decay, options(0.0));
  return std::make_unique<torch::optim::AdamW>(std::move(groups), *options(o.weight_decay));
}

std::int64_t total_train_steps(const TrainOptions& o, int clusters_in_run) {
  if (o.token_budget <= 0) return o.max_steps;
  std::int64_t tokens = o.token_budget * std::max(1, clusters_in_run);
  return std::max<std::int64_t>(1, (tokens + o.tokens_per_step() - 1) / o.tokens_per_step());
}

double evaluate_loss(LlamaForCausalLM& model, const torch::Tensor& sequences, int batch, torch::Device device,
                     bool autocast_bf16, const LoraRouting* lora) {
  if (!sequences.defined() || sequences.size(0) == 0) return std::numeric_limits<double>::quiet_NaN();
  torch::NoGradGuard no_grad;
  model->eval();
  double sum = 0.0;
  std::int64_t count = 0;
  const std::int64_t n = sequences.size(0), T = sequences.size(1) - 1;
  for (std::int64_t i = 0; i < n; i += batch) {
    auto rows = sequences.slice(0, i, std::min(n, i + batch)).to(device);
    auto inputs = rows.slice(1, 0, T), targets = rows.slice(1, 1, T + 1);
    torch::Tensor loss;
    {
      AutocastBf16 ac(device, autocast_bf16);
      loss = cross_entropy(model->forward(inputs, nullptr, lora), targets);
    }
    sum += loss.item<double>() * static_cast<double>(targets.numel());
    count += targets.numel();
  }
  return sum / static_cast<double>(count);
}

namespace {

// What every run of one process shares: the frozen (or trained, in full mode) model and the device.
struct Shared {
  LlamaForCausalLM model{nullptr};
  torch::Device device{torch::kCPU};
  bool bf16 = false;
  AdapterSet adapters;  // the experts being trained (LoRA modes), indexed by Run::adapter_index
  double peak_tflops = 0.0;
  double flops_per_token = 0.0;
  // Read once per process, not once per run of a pack (a manifest of 5,000 clusters is megabytes).
  std::string base_fp;
  std::unique_ptr<PartitionShards> partition;
  std::vector<int> partition_clusters;
  std::int64_t memory_bytes() const {
    return device.is_cuda() ? cuda_peak_allocated_bytes(device.has_index() ? device.index() : 0) : peak_rss_bytes();
  }
};

// One output folder being trained: an expert (alone or in a pack), the dense LoRA, or the full model. Each
// has its own data stream, optimizer, schedule, checkpoints, metrics and summary, so an expert trained in a
// pack ends where it would have ended alone.
struct Run {
  TrainOptions o;
  std::vector<int> clusters;
  stdfs::path out, ckpt_dir, summary_path, metrics_path;
  std::unique_ptr<DocumentSet> train_docs;
  LoraAdapter adapter;
  int adapter_index = -1;
  LoraRouting routing;  // every row on this run's adapter (LoRA modes), or the mixture's layer routing
  std::unique_ptr<ExpertMixture> mixture;  // mixture mode, with its experts' folders and clusters
  std::vector<std::string> mixture_dirs;
  std::vector<int> mixture_clusters;
  std::unique_ptr<PeerLayers> peer;  // peer mode
  NamedTensors trainable;
  std::vector<torch::Tensor> params;
  std::int64_t n_trainable = 0;
  // LoRA modes: a flat AdamW over the adapter (one set of kernels per step, not one per tensor); full mode:
  // torch's, with its two parameter groups.
  std::unique_ptr<FlatAdamW> flat;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  LrSchedule schedule;
  std::int64_t total_steps = 0, step = 0;
  double elapsed_before = 0.0, train_time = 0.0;
  json meta_state = json::object(), opts_json, fingerprints;
  std::unique_ptr<PackedStream> stream;
  std::vector<ClusterValid> valid;
  double window_loss = 0.0, window_time = 0.0, last_loss = std::nan(""), final_valid = std::nan("");
  std::int64_t window_steps = 0;
  json final_valid_per = json::object();
  double lr = 0.0, pending_loss = 0.0;
  Clock::time_point start;
  bool in_pack = false;  // one of several experts trained together (messages name the expert)
  json summary;          // set when the run is finished (before or now)

  const LoraRouting* lora() const { return routing.empty() ? nullptr : &routing; }
  // The optimizer state in torch's form, for checkpoints.
  torch::optim::Optimizer& optimizer_state() { return flat ? flat->torch_optimizer() : *optimizer; }
  void zero_grad() { flat ? flat->zero_grad() : optimizer->zero_grad(); }
  // Clips the gradients to norm `clip` and takes one step at r.lr; returns the norm before clipping (not
  // finite: no step taken).
  double clip_and_step(double clip) {
    if (flat) {
      const double norm = flat->clip_grad_norm(clip);
      if (std::isfinite(norm)) flat->step(lr);
      return norm;
    }
    for (auto& g : optimizer->param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    const double norm = torch::nn::utils::clip_grad_norm_(params, clip);
    if (std::isfinite(norm)) optimizer->step();
    return norm;
  }
};

std::string describe_clusters(const std::vector<int>& c) {
  std::vector<std::string> s;
  for (int k : c) s.push_back(std::to_string(k));
  return join(s, ",");
}

// Token-weighted validation loss over the run's clusters; per-cluster values into *per_cluster.
double run_eval(Shared& sh, Run& r, json* per_cluster) {
  double sum = 0.0;
  std::int64_t count = 0;
  for (const auto& v : r.valid) {
    double l = evaluate_loss(sh.model, v.sequences, r.o.micro_batch, sh.device, sh.bf16, r.lora());
    std::int64_t n = v.sequences.size(0) * (v.sequences.size(1) - 1);
    sum += l * static_cast<double>(n);
    count += n;
    if (per_cluster) (*per_cluster)[std::to_string(v.cluster)] = l;
  }
  sh.model->train();
  return count ? sum / static_cast<double>(count) : std::numeric_limits<double>::quiet_NaN();
}

// The cross-entropy of every position: logits [B, T, V], targets [B, T] -> float32 [B, T].
torch::Tensor token_losses(const torch::Tensor& logits, const torch::Tensor& targets) {
  namespace F = torch::nn::functional;
  return F::cross_entropy(logits.reshape({-1, logits.size(-1)}).to(torch::kFloat32),
                          targets.reshape({-1}).to(torch::kInt64), F::CrossEntropyFuncOptions().reduction(torch::kNone))
      .view(targets.sizes());
}

// Validation losses of several runs at once: for each run, its token-weighted mean and its per-cluster
// losses. The LoRA experts of a pack go through the model together, in mixed-adapter batches of at most
// batch_rows rows, each row on its run's adapter: a few forwards for the whole pack instead of one or more
// per expert. Anything else evaluates run by run.
std::vector<std::pair<double, json>> eval_runs(Shared& sh, const std::vector<Run*>& runs, std::int64_t batch_rows) {
  std::vector<std::pair<double, json>> out(runs.size(), {std::numeric_limits<double>::quiet_NaN(), json::object()});
  // Only LoRA runs have an adapter in sh.adapters (a mixture or PEER run has none).
  const bool together =
      runs.size() > 1 && std::all_of(runs.begin(), runs.end(), [](const Run* r) { return r->adapter_index >= 0; });
  if (!together) {
    for (std::size_t i = 0; i < runs.size(); ++i) out[i].first = run_eval(sh, *runs[i], &out[i].second);
    return out;
  }
  // Every validation set, by sequence length (a cluster with fewer tokens than one sequence has one shorter
  // sequence), each row with its run's adapter and the (run, set) it counts toward.
  struct Rows {
    std::vector<torch::Tensor> seqs;
    std::vector<int> adapter;
    std::vector<std::pair<std::size_t, std::size_t>> owner;
  };
  std::map<std::int64_t, Rows> by_length;
  std::vector<std::vector<double>> sums(runs.size());
  for (std::size_t i = 0; i < runs.size(); ++i) {
    sums[i].assign(runs[i]->valid.size(), 0.0);
    for (std::size_t j = 0; j < runs[i]->valid.size(); ++j) {
      const auto& v = runs[i]->valid[j].sequences;
      Rows& g = by_length[v.size(1)];
      g.seqs.push_back(v);
      g.adapter.insert(g.adapter.end(), static_cast<std::size_t>(v.size(0)), runs[i]->adapter_index);
      g.owner.insert(g.owner.end(), static_cast<std::size_t>(v.size(0)), {i, j});
    }
  }
  torch::NoGradGuard no_grad;
  sh.model->eval();
  for (const auto& [length, g] : by_length) {
    auto all = torch::cat(g.seqs, 0);
    const std::int64_t n = all.size(0), T = length - 1;
    for (std::int64_t i0 = 0; i0 < n; i0 += batch_rows) {
      const std::int64_t i1 = std::min(n, i0 + batch_rows);
      auto rows = all.slice(0, i0, i1).to(sh.device);
      auto inputs = rows.slice(1, 0, T), targets = rows.slice(1, 1, T + 1);
      auto routing =
          LoraRouting::rows(sh.adapters, std::vector<int>(g.adapter.begin() + i0, g.adapter.begin() + i1), sh.device);
      torch::Tensor logits;
      {
        AutocastBf16 ac(sh.device, sh.bf16);
        logits = sh.model->forward(inputs, nullptr, &routing);
      }
      auto row_loss = token_losses(logits, targets).sum(1).to(torch::kCPU, torch::kFloat64);
      auto acc = row_loss.accessor<double, 1>();
      for (std::int64_t b = i0; b < i1; ++b) {
        const auto& [ri, vj] = g.owner[static_cast<std::size_t>(b)];
        sums[ri][vj] += acc[b - i0];
      }
    }
  }
  sh.model->train();
  for (std::size_t i = 0; i < runs.size(); ++i) {
    double sum = 0.0;
    std::int64_t count = 0;
    for (std::size_t j = 0; j < runs[i]->valid.size(); ++j) {
      const auto& v = runs[i]->valid[j];
      const std::int64_t tokens = v.sequences.size(0) * (v.sequences.size(1) - 1);
      out[i].second[std::to_string(v.cluster)] = sums[i][j] / static_cast<double>(tokens);
      sum += sums[i][j];
      count += tokens;
    }
    if (count > 0) out[i].first = sum / static_cast<double>(count);
  }
  return out;
}

[[noreturn]] void diverged(const Run& r, const std::string& what, std::int64_t at_step) {
  std::string last = latest_train_checkpoint(r.ckpt_dir.string());
  throw TrainingDiverged((r.in_pack ? "expert " + std::to_string(r.o.cluster) + ": " : std::string()) +
                         what + " at step " + std::to_string(at_step + 1) + " (lr " +
                         fmt::format("{:.3g}", r.schedule.at(at_step)) + "); stopped without saving. Last good checkpoint: " +
                         (last.empty() ? std::string("none") : last) +
                         ". Lower lr or raise warmup_steps, then --resume (or start over).");
}

json make_meta(const Run& r, double elapsed) {
  return json{{"options", r.opts_json},     {"cursor", r.stream->cursor().to_json()}, {"elapsed_s", elapsed},
              {"train_time_s", r.train_time}, {"total_steps", r.total_steps},       {"state", r.meta_state},
              {"fingerprints", r.fingerprints}};
}

// Mixture mode: every finished expert of o.experts (clusters skipped as too small are left out; a missing
// or unfinished one stops the run: a mixture of the experts that happen to exist would not compare), fresh
// routers over them, and what trains: the routers, and the experts too with mixture.train_experts.
void prepare_mixture(Shared& sh, Run& r) {
  const TrainOptions& o = r.o;
  auto set = std::make_shared<AdapterSet>(sh.model->linears());
  LoraPlacement where;
  where.device = sh.device;
  where.dtype = torch::kFloat32;
  where.trainable = o.mixture.train_experts;
  const auto folders = find_experts(o.experts, static_cast<int>(sh.partition_clusters.size()));
  for (std::size_t k = 0; k < folders.size(); ++k) {
    const auto& f = folders[k];
    if (f.status == "too_small") continue;
    require(f.ok(), "mixture: expert " + std::to_string(k) + " in " + o.experts + " is " + f.status +
                        " (finish the experts first; clusters skipped as too small are left out)");
    set->add(LoraAdapter::load(f.dir, sh.model->linears(), where));
    r.mixture_dirs.push_back(stdfs::absolute(f.dir).string());
    r.mixture_clusters.push_back(static_cast<int>(k));
  }
  require(set->size() > 0, "mixture: " + o.experts + " holds no expert");
  const LlamaConfig& mc = sh.model->config;
  r.mixture = std::make_unique<ExpertMixture>(set, mc.hidden_size, mc.num_hidden_layers, o.mixture, o.seed);
  r.routing = LoraRouting::layered(*r.mixture);
  for (const auto& [name, t] : r.mixture->routers()) r.trainable.emplace_back(name, t);
  if (o.mixture.train_experts)
    for (int e = 0; e < set->size(); ++e)
      for (const auto& m : set->adapter(e).modules()) {
        const std::string p = "experts." + std::to_string(r.mixture_clusters[static_cast<std::size_t>(e)]) + "." + m.name;
        r.trainable.emplace_back(p + ".lora_A", m.A);
        r.trainable.emplace_back(p + ".lora_B", m.B);
      }
  spdlog::info("mixture of {} experts: top-{}{}, {}{}", set->size(), o.mixture.top_k,
               o.mixture.top_k == 0 ? " (soft)" : "", o.mixture.attention ? "MLP and attention" : "MLP only",
               o.mixture.train_experts ? ", experts trained too" : "");
}

// Peer mode: fresh PEER blocks, sized by num_keys, or to match `params`, or the experts' parameters.
void prepare_peer(Shared& sh, Run& r) {
  const TrainOptions& o = r.o;
  const LlamaConfig& mc = sh.model->config;
  PeerOptions po = o.peer;
  if (po.num_keys == 0) {
    std::int64_t target = po.params;
    if (target == 0) {
      for (const auto& f : find_experts(o.experts, static_cast<int>(sh.partition_clusters.size())))
        if (f.ok()) target += LoraAdapter::load(f.dir, sh.model->linears()).num_parameters();
      require(target > 0, "peer: " + o.experts + " holds no expert to match in parameters");
    }
    std::set<int> blocks(po.layers.begin(), po.layers.end());
    po.num_keys = PeerLayers::keys_for_params(target, mc.hidden_size,
                                              blocks.empty() ? mc.num_hidden_layers : static_cast<std::int64_t>(blocks.size()), po);
    spdlog::info("peer: {} parameters to match: n = {} ({} experts per block)", target, po.num_keys,
                 static_cast<std::int64_t>(po.num_keys) * po.num_keys);
  }
  r.peer = std::make_unique<PeerLayers>(mc.hidden_size, mc.num_hidden_layers, po, o.seed, sh.device);
  r.routing = LoraRouting::layered(*r.peer);
  for (const auto& [name, t] : r.peer->parameters()) r.trainable.emplace_back(name, t);
}

// Sets up one run: its folder, data, adapter, optimizer and resume state. Returns false (with r.summary
// set) when there is nothing to train: finished before, or a cluster too small for an expert.
bool prepare_run(Shared& sh, Run& r, bool resume, bool overwrite) {
  const TrainOptions& o = r.o;
  r.out = o.output;
  r.ckpt_dir = r.out / "checkpoints";
  r.summary_path = r.out / "summary.json";
  r.metrics_path = r.out / "metrics.jsonl";
  fs::ensure_dir(o.output);
  if (overwrite) {
    // The summary first: a run killed while it is replaced must not read as finished.
    for (const auto& p : {r.summary_path, r.metrics_path}) stdfs::remove(p);
    stdfs::remove_all(r.ckpt_dir);
  }
  std::string latest = latest_train_checkpoint(r.ckpt_dir.string());
  if (finished_run(o.output, resume, overwrite)) {
    spdlog::info("{} is finished (summary.json exists); nothing to do", o.output);
    r.summary = fs::read_json(r.summary_path);
    return false;
  }
  require(resume || latest.empty(), o.output + " already holds a run's checkpoints: pass --resume to continue it, "
                                               "--overwrite to start it again, or choose another output folder");
  const TrainMode mode = o.train_mode();
  if (!sh.partition) {
    sh.partition = std::make_unique<PartitionShards>(o.partition);
    sh.partition_clusters = sh.partition->clusters();
  }
  if (o.cluster >= 0) {
    const auto& all = sh.partition_clusters;
    require(o.cluster < static_cast<int>(all.size()),
            "cluster " + std::to_string(o.cluster) + " is not in " + o.partition + " (it has " +
                std::to_string(all.size()) + " clusters)");
    r.clusters = {o.cluster};
  } else {
    r.clusters = sh.partition_clusters;
  }
  // An empty cluster has no train shard at all.
  std::vector<std::string> train_shards;
  for (int k : r.clusters) {
    // Checked against the manifest: a shard it lists documents for and that is gone is an error, not an
    // empty cluster.
    const auto shard = sh.partition->shard(k, "train");
    if (!shard.stem.empty()) train_shards.push_back(shard.stem);
  }
  if (!train_shards.empty()) r.train_docs = std::make_unique<DocumentSet>(train_shards);
  if (mode == TrainMode::Expert) {
    // Too little data for an expert: recorded, not trained; its queries route to the base model.
    const std::int64_t tokens = r.train_docs ? r.train_docs->num_tokens() : 0;
    if (tokens < o.min_tokens()) {
      r.summary = json{{"mode", o.mode},        {"status", "too_small"},         {"clusters", r.clusters},
                       {"train_tokens", tokens}, {"min_train_tokens", o.min_tokens()}};
      fs::write_json_atomic(r.summary_path, r.summary);
      spdlog::warn("cluster {} has {} training tokens, fewer than min_train_tokens = {}: no expert (its queries "
                   "route to the base model)", o.cluster, tokens, o.min_tokens());
      return false;
    }
  }
  require(r.train_docs != nullptr, o.partition + " holds no training documents in the clusters this run trains on");
  check_tokenizer(o, *r.train_docs);
  const LlamaConfig& mc = sh.model->config;
  require(r.train_docs->vocab_size() <= mc.vocab_size,
          "the partition's tokens use a vocabulary of " + std::to_string(r.train_docs->vocab_size()) +
              " but the model has " + std::to_string(mc.vocab_size));
  const int eos_id = mc.eos_token_id >= 0 ? static_cast<int>(mc.eos_token_id) : 2;
  const int bos_id = (o.add_bos && mc.bos_token_id >= 0) ? static_cast<int>(mc.bos_token_id) : -1;

  if (trains_adapter(mode)) {
    LoraPlacement where;
    where.device = sh.device;
    where.dtype = torch::kFloat32;
    r.adapter = LoraAdapter::create(sh.model->linears(), o.lora, where);
    r.adapter_index = sh.adapters.add(r.adapter);  // shares the tensors: gradients reach r.adapter
    r.routing = LoraRouting::all(sh.adapters, r.adapter_index);
    for (const auto& m : r.adapter.modules()) {
      r.trainable.emplace_back(m.name + ".lora_A", m.A);
      r.trainable.emplace_back(m.name + ".lora_B", m.B);
    }
  } else if (mode == TrainMode::Mixture) {
    prepare_mixture(sh, r);
  } else if (mode == TrainMode::Peer) {
    prepare_peer(sh, r);
  } else {
    for (const auto& item : sh.model->named_parameters(true)) r.trainable.emplace_back(item.key(), item.value());
  }
  for (const auto& [name, t] : r.trainable) {
    r.n_trainable += t.numel();
    r.params.push_back(t);
  }
  if (mode != TrainMode::Full) {
    // Every LoRA tensor and router is 2-D, so the one group make_adamw would give it decays them all.
    r.flat = std::make_unique<FlatAdamW>(r.params, adamw_options(o, o.weight_decay));
  } else {
    r.optimizer = make_adamw(r.trainable, o);
  }
  r.total_steps = total_train_steps(o, static_cast<int>(r.clusters.size()));
  r.schedule = LrSchedule{o.lr, o.warmup_steps, r.total_steps, o.min_lr_ratio};
  r.opts_json = config::to_json(o);
  r.fingerprints = input_fingerprints(o, r.clusters, sh.base_fp, *sh.partition);
  DataCursor cursor;
  double train_time_before = 0.0;

  if (resume && !latest.empty()) {
    // The newest checkpoint first; one that cannot be read (a damaged or truncated file) falls back to the
    // one before it, losing one more checkpoint interval rather than the run.
    json meta;
    std::string from;
    for (const auto& candidate : train_checkpoints_newest_first(r.ckpt_dir.string())) {
      try {
        meta = load_train_checkpoint(candidate, r.trainable, r.optimizer_state(), sh.device);
        if (r.flat) r.flat->adopt_loaded_state();
        from = candidate;
        break;
      } catch (const UnreadableCheckpoint& e) {
        spdlog::warn("{}; trying the checkpoint before it", e.what());
      }
    }
    require(!from.empty(), "cannot resume: no checkpoint in " + r.ckpt_dir.string() + " can be read");
    latest = from;
    const json saved_fp = meta.value("fingerprints", json::object());
    std::vector<std::string> differ;
    for (const char* what : {"base", "partition"})
      if (saved_fp.contains(what) && r.fingerprints.contains(what) && saved_fp[what] != r.fingerprints[what])
        differ.push_back(std::string(what) + " (fingerprint " + r.fingerprints[what].get<std::string>() +
                         ", the checkpoint's " + saved_fp[what].get<std::string>() + ")");
    require(differ.empty(), "cannot resume " + latest + ": this run's " + join(differ, " and ") +
                                " differs from the one the checkpoint was trained on; resuming would mix the "
                                "two. Use the original, or start a new output folder");
    const json& saved = meta.at("options");
    std::vector<std::string> changed;
    for (auto it = r.opts_json.begin(); it != r.opts_json.end(); ++it)
      if (!resumable_key(it.key()) && (!saved.contains(it.key()) || saved[it.key()] != it.value()))
        changed.push_back(it.key());
    require(changed.empty(), "cannot resume " + latest + ": these options differ from the checkpoint's: " +
                                 join(changed, ", "));
    r.step = meta.at("step").get<std::int64_t>();
    cursor = DataCursor::from_json(meta.at("cursor"));
    r.elapsed_before = meta.value("elapsed_s", 0.0);
    train_time_before = meta.value("train_time_s", 0.0);
    r.meta_state = meta.value("state", json::object());
    r.meta_state["resumed"] = r.meta_state.value("resumed", 0) + 1;
    truncate_metrics(r.metrics_path, r.step);
    spdlog::info("{}: resumed from {} (step {} of {})", o.output, latest, r.step, r.total_steps);
  } else if (stdfs::exists(r.metrics_path)) {
    stdfs::remove(r.metrics_path);
  }
  r.train_time = train_time_before;

  PackingOptions po;
  po.seq_len = o.seq_len;
  po.bos_id = bos_id;
  po.eos_id = eos_id;
  po.seed = o.seed;
  r.stream = std::make_unique<PackedStream>(*r.train_docs, po, cursor);

  // Validation: a fixed set of sequences of each cluster's valid split.
  for (int k : r.clusters) {
    const std::string shard = sh.partition->shard(k, "valid").stem;
    torch::Tensor seqs;
    if (!shard.empty()) {
      DocumentSet vd({shard});
      seqs = make_validation_set(vd, o.seq_len, o.eval_tokens, bos_id, eos_id);
    }
    if (!seqs.defined() || seqs.size(0) == 0) {
      spdlog::warn("cluster {} has no validation documents ({}): no validation set, not evaluated", k, shard);
      continue;
    }
    r.valid.push_back({k, seqs});
  }
  r.start = Clock::now();
  return true;
}

// The step-0 validation loss of the runs starting fresh (evaluated together: eval_runs).
void initial_evals(Shared& sh, const std::vector<Run*>& runs, std::int64_t batch_rows) {
  std::vector<Run*> fresh;
  for (Run* r : runs)
    if (r->step == 0 && !r->meta_state.contains("initial_valid_loss") && !r->valid.empty()) fresh.push_back(r);
  const auto losses = eval_runs(sh, fresh, batch_rows);
  for (std::size_t i = 0; i < fresh.size(); ++i) {
    Run& r = *fresh[i];
    const auto& [l0, per] = losses[i];
    r.meta_state["initial_valid_loss"] = l0;
    r.meta_state["initial_valid_loss_per_cluster"] = per;
    spdlog::info("{}step 0: valid loss {:.4f}", r.in_pack ? r.o.output + ": " : std::string(), l0);
    fs::append_line(r.metrics_path,
                    json{{"kind", "eval"}, {"step", 0}, {"valid_loss", l0}, {"valid_loss_per_cluster", per}}.dump());
  }
}

bool all_finite(const Run& r) {
  torch::NoGradGuard ng;
  if (r.flat) return r.flat->all_finite();
  for (const auto& [name, t] : r.trainable)
    if (!torch::isfinite(t).all().item<bool>()) return false;
  return true;
}

// After one optimizer step of `r` that took dt seconds (its share of a packed step): counts and logs it.
void record_step(Shared& sh, Run& r, double train_loss, double gnorm, double dt, bool quiet_log) {
  const TrainOptions& o = r.o;
  ++r.step;
  r.train_time += dt;
  r.window_time += dt;
  r.window_loss += train_loss;
  ++r.window_steps;
  r.last_loss = train_loss;
  const bool last_step = r.step == r.total_steps;
  if (r.step % o.log_every == 0 || last_step) {
    const double tps = static_cast<double>(r.window_steps * o.tokens_per_step()) / std::max(r.window_time, 1e-9);
    json line{{"kind", "train"},
              {"step", r.step},
              {"tokens", r.step * o.tokens_per_step()},
              {"loss", r.window_loss / static_cast<double>(r.window_steps)},
              {"lr", r.lr},
              {"grad_norm", gnorm},
              {"tokens_per_s", tps},
              {"memory_bytes", sh.memory_bytes()},
              {"elapsed_s", r.elapsed_before + seconds_since(r.start)}};
    if (sh.peak_tflops > 0) line["mfu"] = tps * sh.flops_per_token / (sh.peak_tflops * 1e12);
    fs::append_line(r.metrics_path, line.dump());
    auto msg = fmt::format("step {}/{}: loss {:.4f}, lr {:.3g}, grad norm {:.3g}, {} tokens/s", r.step, r.total_steps,
                           r.window_loss / static_cast<double>(r.window_steps), r.lr, gnorm, human_count(tps));
    if (quiet_log)
      spdlog::debug("{}: {}", o.output, msg);
    else
      spdlog::info("{}", msg);
    r.window_loss = r.window_time = 0.0;
    r.window_steps = 0;
  }
}

bool eval_due(const Run& r) {
  return ((r.o.eval_every > 0 && r.step % r.o.eval_every == 0) || r.step == r.total_steps) && !r.valid.empty();
}

// After the step's evaluation (`eval`: its result, when eval_due): records it; checkpoints.
void after_step(Shared& sh, Run& r, const std::pair<double, json>* eval, bool quiet_log) {
  const TrainOptions& o = r.o;
  const bool last_step = r.step == r.total_steps;
  if (eval != nullptr) {
    const auto& [vl, per] = *eval;
    fs::append_line(r.metrics_path,
                    json{{"kind", "eval"}, {"step", r.step}, {"valid_loss", vl}, {"valid_loss_per_cluster", per}}.dump());
    if (quiet_log)
      spdlog::debug("{}: step {}: valid loss {:.4f}", o.output, r.step, vl);
    else
      spdlog::info("step {}: valid loss {:.4f}", r.step, vl);
    if (last_step) {
      r.final_valid = vl;
      r.final_valid_per = per;
    }
  }
  // The last step's checkpoint would only be deleted after the finish (unless kept): the adapter and the
  // summary, written right after, are the result; a kill before them resumes from the checkpoint before.
  const bool checkpoint = last_step ? o.keep_final_checkpoint : (o.checkpoint_every > 0 && r.step % o.checkpoint_every == 0);
  if ((checkpoint || last_step) && !all_finite(r)) diverged(r, "a trainable weight became NaN or infinite", r.step - 1);
  if (checkpoint) {
    r.meta_state["last_train_loss"] = r.last_loss;
    save_train_checkpoint(r.ckpt_dir.string(), r.step, make_meta(r, r.elapsed_before + seconds_since(r.start)),
                          r.trainable, r.optimizer_state(), sh.device, o.keep_checkpoints);
  }
}

// Saves the result and the summary of a run that reached its last step.
void finish_run(Shared& sh, Run& r, const std::vector<int>& pack, double pack_wall) {
  const TrainOptions& o = r.o;
  // A resumed run that stopped after its last checkpoint but before the summary: evaluate now.
  if (std::isnan(r.final_valid) && !r.valid.empty()) r.final_valid = run_eval(sh, r, &r.final_valid_per);
  if (std::isnan(r.last_loss)) r.last_loss = r.meta_state.value("last_train_loss", std::nan(""));
  if (trains_adapter(o.train_mode())) {
    r.adapter.save(o.output, o.base);
  } else if (r.mixture) {
    r.mixture->save(o.output, r.mixture_dirs, r.mixture_clusters);
  } else if (r.peer) {
    r.peer->save(o.output);
  } else {
    save_llama(sh.model, o.output);
    stdfs::path tok = o.base.empty() ? stdfs::path(r.train_docs->shards().front().info().tokenizer)
                                     : stdfs::path(o.base) / Tokenizer::kSentencePieceFile;
    if (!tok.empty() && stdfs::exists(tok)) fs::write_atomic(r.out / Tokenizer::kSentencePieceFile, fs::read_text(tok));
  }
  const double wall = r.elapsed_before + seconds_since(r.start);
  const std::int64_t tokens_seen = r.step * o.tokens_per_step();
  const double tps = static_cast<double>(tokens_seen) / std::max(r.train_time, 1e-9);
  json per_cluster = json::object();
  const json& init_per = r.meta_state.value("initial_valid_loss_per_cluster", json::object());
  for (auto it = r.final_valid_per.begin(); it != r.final_valid_per.end(); ++it)
    per_cluster[it.key()] = {{"initial", init_per.value(it.key(), json())}, {"final", it.value()}};
  // JSON has no NaN: a run without validation documents says so instead.
  auto number_or_null = [](double x) { return std::isfinite(x) ? json(x) : json(nullptr); };
  json summary{{"mode", o.mode},
               {"status", "done"},
               {"clusters", r.clusters},
               {"base", o.base},
               {"steps", r.step},
               {"tokens_seen", tokens_seen},
               {"wall_time_s", pack.size() > 1 ? r.train_time : wall},
               {"train_time_s", r.train_time},
               {"tokens_per_s", tps},
               {"final_train_loss", number_or_null(r.last_loss)},
               {"final_valid_loss", number_or_null(r.final_valid)},
               {"initial_valid_loss", r.meta_state.value("initial_valid_loss", json())},
               {"valid_loss_per_cluster", per_cluster},
               {"trainable_parameters", r.n_trainable},
               {"flops_per_token", sh.flops_per_token},
               {"peak_memory_bytes", sh.memory_bytes()},
               {"device", sh.device.str()},
               {"bf16", sh.bf16},
               {"resumed", r.meta_state.value("resumed", 0)}};
  if (r.valid.empty()) summary["validation"] = "no validation set";
  if (r.mixture)
    summary["mixture"] = {{"experts", r.mixture->size()}, {"clusters", r.mixture_clusters},
                          {"options", config::to_json(r.mixture->options())}};
  if (r.peer) {
    const int n = r.peer->options().num_keys;
    summary["peer"] = {{"layers", r.peer->layers()}, {"num_keys", n},
                       {"experts_per_block", static_cast<std::int64_t>(n) * n},
                       {"options", config::to_json(r.peer->options())}};
  }
  // In a pack, wall_time_s and train_time_s are this expert's share of the steps it took part in.
  if (pack.size() > 1) summary["pack"] = {{"clusters", pack}, {"wall_time_s", pack_wall}};
  if (sh.peak_tflops > 0) summary["mfu"] = tps * sh.flops_per_token / (sh.peak_tflops * 1e12);
  fs::write_json_atomic(r.summary_path, summary);
  // The optimizer state is ~3x the adapter and only needed to resume: the run is finished.
  if (!o.keep_final_checkpoint) {
    std::error_code ec;
    stdfs::remove_all(r.ckpt_dir, ec);
  }
  spdlog::info("{}finished: {} tokens in {}, {} tokens/s; train loss {:.4f}, valid loss {}",
               pack.size() > 1 ? o.output + ": " : std::string(), human_count(static_cast<double>(tokens_seen)),
               human_duration(wall), human_count(tps), r.last_loss,
               r.valid.empty() ? std::string("(no validation set)") : fmt::format("{:.4f}", r.final_valid));
  r.summary = summary;
}

}  // namespace

bool finished_run(const std::string& dir, bool resume, bool overwrite) {
  if (overwrite || !stdfs::exists(stdfs::path(dir) / "summary.json")) return false;
  // Repeating the command of a finished run must not replace it (its metrics, then its adapter).
  require(resume, dir + " holds a finished run (summary.json): pass --resume to keep it (nothing is trained), or "
                        "--overwrite to train it again from step 0, or choose another output folder");
  return true;
}

void check_output_folder(const TrainOptions& o) {
  fs::require_output_outside(o.output, o.partition, "train", "partition");
  fs::require_output_outside(o.output, o.base, "train", "base model");
  const TrainMode mode = o.train_mode();
  if (mode == TrainMode::Mixture || mode == TrainMode::Peer)
    fs::require_output_outside(o.output, o.experts, "train", "experts folder");
}

json train(const TrainOptions& o, bool resume, bool overwrite) {
  config::validate(o);
  check_output_folder(o);
  if (o.num_threads > 0) torch::set_num_threads(o.num_threads);

  // ---- device, precision, model
  Shared sh;
  sh.device = parse_device(o.device);
  sh.bf16 = o.dtype == "bf16" || (o.dtype == "auto" && sh.device.is_cuda());
  if (sh.device.is_cuda()) at::globalContext().setFloat32MatmulPrecision("high");  // TF32 where fp32 remains
  torch::manual_seed(o.seed);
  if (!o.base.empty()) {
    sh.model = load_llama(o.base, torch::kFloat32, sh.device);
  } else {
    sh.model = make_llama(LlamaConfig::load(o.model_config), torch::kFloat32, sh.device, o.seed);
  }
  const LlamaConfig& mc = sh.model->config;
  // RoPE has no table beyond the model's positions, and a huge seq_len runs for minutes before it fails.
  require(mc.max_position_embeddings <= 0 || o.seq_len <= mc.max_position_embeddings,
          "seq_len " + std::to_string(o.seq_len) + " exceeds the model's max_position_embeddings (" +
              std::to_string(mc.max_position_embeddings) + ")");
  const bool lora = o.lora_mode();
  sh.model->set_requires_grad(!lora);
  sh.adapters = AdapterSet(sh.model->linears());
  if (!o.base.empty()) sh.base_fp = base_fingerprint(o.base);

  // ---- the runs: one, or one per cluster of a pack (each in OUTPUT/<k>, with its own options)
  std::vector<TrainOptions> run_opts;
  if (o.packed()) {
    for (int k : o.clusters) {
      TrainOptions e = o;
      e.clusters.clear();
      e.cluster = k;
      e.output = (stdfs::path(o.output) / std::to_string(k)).string();
      run_opts.push_back(e);
    }
  } else {
    run_opts.push_back(o);
  }
  std::vector<std::unique_ptr<Run>> runs;
  std::vector<Run*> active;
  json results = json::object();
  for (const auto& ro : run_opts) {
    auto r = std::make_unique<Run>();
    r->o = ro;
    r->in_pack = o.packed();
    if (prepare_run(sh, *r, resume, overwrite) && r->step < r->total_steps) active.push_back(r.get());
    runs.push_back(std::move(r));
  }
  // Validation batches as large as a training step's (micro-batches of every run in the pack).
  const std::int64_t eval_rows = static_cast<std::int64_t>(o.micro_batch) * std::max<std::int64_t>(1, static_cast<std::int64_t>(active.size()));
  initial_evals(sh, active, eval_rows);

  FlopCount flops;
  flops.layers = mc.num_hidden_layers;
  flops.attn_width = mc.num_attention_heads * mc.dim_head();
  flops.seq_len = o.seq_len;
  std::int64_t matmul_params = mc.vocab_size * mc.hidden_size;  // the head
  for (const auto& [name, lin] : sh.model->linears()) matmul_params += lin->in_features * lin->out_features;
  if (lora) {
    flops.matmul_params_frozen = matmul_params;
    flops.matmul_params_trained = runs.front()->n_trainable;
    if (flops.matmul_params_trained == 0)
      flops.matmul_params_trained = LoraAdapter::create(sh.model->linears(), o.lora).num_parameters();
  } else {
    flops.matmul_params_trained = matmul_params;
  }
  sh.flops_per_token = flops.per_token();
  sh.peak_tflops = o.peak_tflops > 0 ? o.peak_tflops
                                     : (sh.device.is_cuda() ? known_peak_tflops(cuda_device_name(
                                                                  sh.device.has_index() ? sh.device.index() : 0))
                                                            : 0.0);

  std::int64_t steps_left = 0;
  for (Run* r : active) steps_left += r->total_steps - r->step;
  if (!active.empty()) {
    const Run& r0 = *active.front();
    spdlog::info("{} training: {} {}, {} documents, {} tokens; model {} layers x {}, {} trainable parameters{}; "
                 "{} steps x {} tokens on {}{}",
                 o.mode, o.packed() ? active.size() : r0.clusters.size(),
                 o.packed() ? "experts in one pack" : "clusters", r0.train_docs->num_docs(),
                 human_count(static_cast<double>(r0.train_docs->num_tokens())), mc.num_hidden_layers, mc.hidden_size,
                 r0.n_trainable, o.packed() ? " each" : "", r0.total_steps, o.tokens_per_step(), sh.device.str(),
                 sh.bf16 ? " (bf16 autocast)" : "");
  }

  // ---- the loop: each step, every active run draws its micro-batches; they go through the model in one
  // mixed-adapter forward and backward, and each run steps its own optimizer.
  sh.model->train();
  const auto pack_start = Clock::now();
  const double clip = o.grad_clip > 0 ? o.grad_clip : std::numeric_limits<double>::infinity();
  Progress progress("training", steps_left, "steps");
  const bool quiet_log = o.packed();
  while (!active.empty()) {
    const auto t0 = Clock::now();
    for (Run* r : active) {
      r->lr = r->schedule.at(r->step);
      r->zero_grad();
      r->pending_loss = 0.0;
    }
    std::vector<int> per_row;
    for (std::size_t i = 0; i < active.size(); ++i)
      for (int b = 0; b < o.micro_batch; ++b) per_row.push_back(active[i]->adapter_index);
    LoraRouting rows = lora && active.size() > 1 ? LoraRouting::rows(sh.adapters, per_row, sh.device) : LoraRouting();
    const LoraRouting* routing = active.size() > 1 ? &rows : active.front()->lora();
    const auto n_runs = static_cast<std::int64_t>(active.size());
    for (int m = 0; m < o.grad_accum; ++m) {
      std::vector<torch::Tensor> batches;
      for (Run* r : active) batches.push_back(r->stream->next(o.micro_batch));
      auto batch = (batches.size() == 1 ? batches.front() : torch::cat(batches, 0)).to(sh.device);
      auto inputs = batch.slice(1, 0, o.seq_len), targets = batch.slice(1, 1, o.seq_len + 1);
      torch::Tensor logits;
      {
        AutocastBf16 ac(sh.device, sh.bf16);
        logits = sh.model->forward(inputs, nullptr, routing);
      }
      // Each run's loss is the mean over its own rows, as if it ran alone; their sum has, for each run's
      // adapter, exactly that run's gradient (rows never see each other's adapters). One cross-entropy over
      // all rows: a loss per run over a slice of the logits would make each backward fill a zero gradient
      // of the whole batch's logits, quadratic in the pack.
      // A single run keeps the plain mean (bit for bit what unpacked training always computed).
      auto losses = n_runs == 1 ? cross_entropy(logits, targets).view({1})
                                : token_losses(logits, targets).view({n_runs, -1}).mean(1);
      std::vector<float> poison(active.size(), 0.0f);
      bool poisoned = false;
      for (std::size_t i = 0; i < active.size(); ++i)
        if (active[i]->step == o.fault_nan_at_step) poison[i] = std::nanf(""), poisoned = true;
      if (poisoned) losses = losses + torch::tensor(poison).to(losses.device());
      auto objective = losses.sum();
      // A mixture (never packed) also balances its routers' load; the logged loss stays the cross-entropy.
      if (active.front()->mixture)
        objective = objective + o.mixture.balance_coef * active.front()->mixture->take_balance_loss();
      (objective / o.grad_accum).backward();
      auto values = losses.detach().to(torch::kCPU, torch::kFloat64);
      auto acc = values.accessor<double, 1>();
      for (std::size_t i = 0; i < active.size(); ++i) active[i]->pending_loss += acc[static_cast<std::int64_t>(i)];
    }
    std::vector<double> gnorms;
    for (Run* r : active) {
      const double train_loss = r->pending_loss / o.grad_accum;
      if (!std::isfinite(train_loss)) diverged(*r, "the training loss became " + describe_value(train_loss), r->step);
      const double gnorm = r->clip_and_step(clip);
      if (!std::isfinite(gnorm)) diverged(*r, "the gradient norm became " + describe_value(gnorm), r->step);
      gnorms.push_back(gnorm);
    }
    if (sh.device.is_cuda()) torch::cuda::synchronize();
    // Each run is charged an equal share of the shared step.
    const double dt = seconds_since(t0) / static_cast<double>(active.size());
    std::vector<Run*> due, still;
    for (std::size_t i = 0; i < active.size(); ++i) {
      record_step(sh, *active[i], active[i]->pending_loss / o.grad_accum, gnorms[i], dt, quiet_log);
      if (eval_due(*active[i])) due.push_back(active[i]);
    }
    const auto evals = eval_runs(sh, due, eval_rows);
    for (Run* r : active) {
      const auto at = std::find(due.begin(), due.end(), r);
      after_step(sh, *r, at == due.end() ? nullptr : &evals[static_cast<std::size_t>(at - due.begin())], quiet_log);
      if (r->step < r->total_steps) still.push_back(r);
    }
    progress.add(static_cast<std::int64_t>(active.size()));
    // A pack whose experts finish at different times goes on with the rest.
    for (Run* r : active)
      if (r->step >= r->total_steps) finish_run(sh, *r, o.clusters, seconds_since(pack_start));
    active = std::move(still);
    if (o.fault_sleep_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(o.fault_sleep_s));
  }
  progress.finish();
  // Runs resumed after their last step (killed between the last checkpoint and the summary).
  for (auto& r : runs)
    if (r->summary.is_null() && r->stream) finish_run(sh, *r, o.clusters, seconds_since(pack_start));

  if (!o.packed()) return runs.front()->summary;
  for (auto& r : runs) results[std::to_string(r->o.cluster)] = r->summary;
  return json{{"mode", o.mode}, {"pack", o.clusters}, {"experts", results},
              {"wall_time_s", seconds_since(pack_start)}};
}

}  // namespace moin
