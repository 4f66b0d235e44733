#include "moin/train/trainer.h"

#include <ATen/Context.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <thread>

#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "moin/core/hash.h"
#include "moin/core/log.h"
#include "moin/core/progress.h"
#include "moin/core/strings.h"
#include "moin/model/autocast.h"
#include "moin/model/checkpoint.h"
#include "moin/model/lora.h"
#include "moin/train/data.h"
#include "moin/train/partition_layout.h"
#include "moin/train/perf.h"
#include "moin/train/schedule.h"
#include "moin/train/train_checkpoint.h"

namespace moin {

namespace stdfs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Keys of the options that may change between a run and its resumption (they do not affect the result).
bool resumable_key(const std::string& k) {
  static const char* keys[] = {"output",        "device",      "num_threads",       "log_every",
                               "eval_every",    "eval_tokens", "checkpoint_every",  "keep_checkpoints",
                               "peak_tflops",   "fault_nan_at_step", "fault_sleep_s", "partition", "base"};
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
  stdfs::path tok = stdfs::path(o.base) / "tokenizer.model";
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
json input_fingerprints(const TrainOptions& o, const std::vector<int>& clusters) {
  json fp = json::object();
  if (!o.base.empty()) {
    std::vector<std::string> files;
    for (const auto& e : stdfs::directory_iterator(o.base)) {
      const std::string name = e.path().filename().string();
      if (name == "config.json" || name == "model.safetensors.index.json" || ends_with(name, ".safetensors"))
        files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    fp["base"] = files_fingerprint(files);
  }
  std::vector<std::string> shards;
  for (int k : clusters)
    for (const char* split : {"train", "valid"}) {
      const std::string stem = token_shard_stem(cluster_shard(o.partition, k, split));
      for (const char* ext : {".json", ".idx", ".bin"})
        if (stdfs::exists(stem + ext)) shards.push_back(stem + ext);
    }
  fp["partition"] = files_fingerprint(shards);
  return fp;
}

std::string describe_value(double x) { return std::isnan(x) ? "NaN" : "infinite"; }

}  // namespace

std::unique_ptr<torch::optim::AdamW> make_adamw(const NamedTensors& trainable, const TrainOptions& o) {
  auto options = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(wd));
  };
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
                     bool autocast_bf16) {
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
      loss = cross_entropy(model->forward(inputs), targets);
    }
    sum += loss.item<double>() * static_cast<double>(targets.numel());
    count += targets.numel();
  }
  return sum / static_cast<double>(count);
}

json train(const TrainOptions& o, bool resume) {
  config::validate(o);
  const stdfs::path out(o.output);
  const stdfs::path ckpt_dir = out / "checkpoints";
  const stdfs::path summary_path = out / "summary.json";
  const stdfs::path metrics_path = out / "metrics.jsonl";
  fs::ensure_dir(o.output);

  std::string latest = latest_train_checkpoint(ckpt_dir.string());
  if (resume && stdfs::exists(summary_path)) {
    spdlog::info("{} is finished (summary.json exists); nothing to do", o.output);
    return fs::read_json(summary_path);
  }
  require(resume || latest.empty(), o.output + " already holds a run's checkpoints: pass --resume to continue it, "
                                               "or choose another output folder");
  if (o.num_threads > 0) torch::set_num_threads(o.num_threads);

  // ---- device and precision
  torch::Device device = parse_device(o.device);
  const bool bf16 = o.dtype == "bf16" || (o.dtype == "auto" && device.is_cuda());
  if (device.is_cuda()) at::globalContext().setFloat32MatmulPrecision("high");  // TF32 where fp32 remains
  torch::manual_seed(o.seed);

  // ---- data
  std::vector<int> clusters;
  if (o.cluster >= 0) {
    auto all = partition_clusters(o.partition);
    require(o.cluster < static_cast<int>(all.size()),
            "cluster " + std::to_string(o.cluster) + " is not in " + o.partition + " (it has " +
                std::to_string(all.size()) + " clusters)");
    clusters = {o.cluster};
  } else {
    clusters = partition_clusters(o.partition);
  }
  std::vector<std::string> train_shards;
  for (int k : clusters) train_shards.push_back(cluster_shard(o.partition, k, "train"));
  DocumentSet train_docs(train_shards);
  check_tokenizer(o, train_docs);

  // ---- model
  LlamaForCausalLM model{nullptr};
  if (!o.base.empty()) {
    model = load_llama(o.base, torch::kFloat32, device);
  } else {
    model = make_llama(LlamaConfig::load(o.model_config), torch::kFloat32, device, o.seed);
  }
  const LlamaConfig& mc = model->config;
  // RoPE has no table beyond the model's positions, and a huge seq_len runs for minutes before it fails.
  require(mc.max_position_embeddings <= 0 || o.seq_len <= mc.max_position_embeddings,
          "seq_len " + std::to_string(o.seq_len) + " exceeds the model's max_position_embeddings (" +
              std::to_string(mc.max_position_embeddings) + ")");
  require(train_docs.vocab_size() <= mc.vocab_size,
          "the partition's tokens use a vocabulary of " + std::to_string(train_docs.vocab_size()) +
              " but the model has " + std::to_string(mc.vocab_size));
  const int eos_id = mc.eos_token_id >= 0 ? static_cast<int>(mc.eos_token_id) : 2;
  const int bos_id = (o.add_bos && mc.bos_token_id >= 0) ? static_cast<int>(mc.bos_token_id) : -1;

  LoraAdapter adapter;
  NamedTensors trainable;
  auto linears = model->linears();
  std::int64_t matmul_params = mc.vocab_size * mc.hidden_size;  // the head
  for (const auto& [name, lin] : linears) matmul_params += lin->in_features * lin->out_features;
  FlopCount flops;
  flops.layers = mc.num_hidden_layers;
  flops.attn_width = mc.num_attention_heads * mc.dim_head();
  flops.seq_len = o.seq_len;
  if (o.lora_mode()) {
    model->set_requires_grad(false);
    LoraPlacement where;
    where.device = device;
    where.dtype = torch::kFloat32;
    adapter = LoraAdapter::create(linears, o.lora, where);
    adapter.attach(linears);
    for (const auto& m : adapter.modules()) {
      trainable.emplace_back(m.name + ".lora_A", m.A);
      trainable.emplace_back(m.name + ".lora_B", m.B);
    }
    flops.matmul_params_frozen = matmul_params;
    flops.matmul_params_trained = adapter.num_parameters();
  } else {
    model->set_requires_grad(true);
    for (const auto& item : model->named_parameters(true)) trainable.emplace_back(item.key(), item.value());
    flops.matmul_params_trained = matmul_params;
  }
  std::int64_t n_trainable = 0;
  for (const auto& [name, t] : trainable) n_trainable += t.numel();

  auto optimizer_ptr = make_adamw(trainable, o);
  torch::optim::AdamW& optimizer = *optimizer_ptr;
  std::vector<torch::Tensor> all_params;
  for (const auto& [name, t] : trainable) all_params.push_back(t);

  // ---- schedule and state
  const std::int64_t total_steps = total_train_steps(o, static_cast<int>(clusters.size()));
  LrSchedule schedule{o.lr, o.warmup_steps, total_steps, o.min_lr_ratio};
  std::int64_t step = 0;
  double elapsed_before = 0.0, train_time_before = 0.0;
  DataCursor cursor;
  json meta_state = json::object();  // carried through checkpoints: initial losses, resumptions
  const json opts_json = config::to_json(o);
  const json fingerprints = input_fingerprints(o, clusters);

  if (resume && !latest.empty()) {
    // The newest checkpoint first; one that cannot be read (a damaged or truncated file) falls back to the
    // one before it, losing one more checkpoint interval rather than the run.
    json meta;
    std::string from;
    for (const auto& candidate : train_checkpoints_newest_first(ckpt_dir.string())) {
      try {
        meta = load_train_checkpoint(candidate, trainable, optimizer, device);
        from = candidate;
        break;
      } catch (const UnreadableCheckpoint& e) {
        spdlog::warn("{}; trying the checkpoint before it", e.what());
      }
    }
    require(!from.empty(), "cannot resume: no checkpoint in " + ckpt_dir.string() + " can be read");
    latest = from;
    const json saved_fp = meta.value("fingerprints", json::object());
    std::vector<std::string> differ;
    for (const char* what : {"base", "partition"})
      if (saved_fp.contains(what) && fingerprints.contains(what) && saved_fp[what] != fingerprints[what])
        differ.push_back(std::string(what) + " (fingerprint " + fingerprints[what].get<std::string>() +
                         ", the checkpoint's " + saved_fp[what].get<std::string>() + ")");
    require(differ.empty(), "cannot resume " + latest + ": this run's " + join(differ, " and ") +
                                " differs from the one the checkpoint was trained on; resuming would mix the "
                                "two. Use the original, or start a new output folder");
    const json& saved = meta.at("options");
    std::vector<std::string> changed;
    for (auto it = opts_json.begin(); it != opts_json.end(); ++it)
      if (!resumable_key(it.key()) && (!saved.contains(it.key()) || saved[it.key()] != it.value()))
        changed.push_back(it.key());
    require(changed.empty(), "cannot resume " + latest + ": these options differ from the checkpoint's: " +
                                 join(changed, ", "));
    step = meta.at("step").get<std::int64_t>();
    cursor = DataCursor::from_json(meta.at("cursor"));
    elapsed_before = meta.value("elapsed_s", 0.0);
    train_time_before = meta.value("train_time_s", 0.0);
    meta_state = meta.value("state", json::object());
    meta_state["resumed"] = meta_state.value("resumed", 0) + 1;
    truncate_metrics(metrics_path, step);
    spdlog::info("resumed from {} (step {} of {})", latest, step, total_steps);
  } else if (stdfs::exists(metrics_path)) {
    stdfs::remove(metrics_path);
  }

  PackingOptions po;
  po.seq_len = o.seq_len;
  po.bos_id = bos_id;
  po.eos_id = eos_id;
  po.seed = o.seed;
  PackedStream stream(train_docs, po, cursor);

  // Validation: a fixed set of sequences of each cluster's valid split.
  std::vector<ClusterValid> valid;
  for (int k : clusters) {
    std::string shard = cluster_shard(o.partition, k, "valid");
    if (!stdfs::exists(token_shard_stem(shard) + ".json")) {
      spdlog::warn("cluster {} has no valid split ({}): not evaluated", k, shard);
      continue;
    }
    DocumentSet vd({shard});
    auto seqs = make_validation_set(vd, o.seq_len, o.eval_tokens, bos_id, eos_id);
    if (seqs.size(0) > 0) valid.push_back({k, seqs});
  }
  // Token-weighted over clusters; per-cluster values recorded too.
  auto run_eval = [&](json* per_cluster) {
    double sum = 0.0;
    std::int64_t count = 0;
    for (const auto& v : valid) {
      double l = evaluate_loss(model, v.sequences, o.micro_batch, device, bf16);
      std::int64_t n = v.sequences.size(0) * (v.sequences.size(1) - 1);
      sum += l * static_cast<double>(n);
      count += n;
      if (per_cluster) (*per_cluster)[std::to_string(v.cluster)] = l;
    }
    model->train();
    return count ? sum / static_cast<double>(count) : std::numeric_limits<double>::quiet_NaN();
  };

  const double peak_tflops =
      o.peak_tflops > 0 ? o.peak_tflops
                        : (device.is_cuda() ? known_peak_tflops(cuda_device_name(device.has_index() ? device.index() : 0))
                                            : 0.0);
  const double flops_per_token = flops.per_token();
  auto memory_bytes = [&] {
    return device.is_cuda() ? cuda_peak_allocated_bytes(device.has_index() ? device.index() : 0) : peak_rss_bytes();
  };

  spdlog::info("{} training: {} clusters, {} documents, {} tokens; model {} layers x {}, {} trainable "
               "parameters; {} steps x {} tokens on {}{}",
               o.mode, clusters.size(), train_docs.num_docs(), human_count(static_cast<double>(train_docs.num_tokens())),
               mc.num_hidden_layers, mc.hidden_size, n_trainable, total_steps, o.tokens_per_step(), device.str(),
               bf16 ? " (bf16 autocast)" : "");

  if (step == 0 && !meta_state.contains("initial_valid_loss")) {
    json per = json::object();
    double l0 = run_eval(&per);
    meta_state["initial_valid_loss"] = l0;
    meta_state["initial_valid_loss_per_cluster"] = per;
    spdlog::info("step 0: valid loss {:.4f}", l0);
    fs::append_line(metrics_path,
                    json{{"kind", "eval"}, {"step", 0}, {"valid_loss", l0}, {"valid_loss_per_cluster", per}}.dump());
  }

  auto make_meta = [&](double elapsed, double train_time) {
    return json{{"options", opts_json},     {"cursor", stream.cursor().to_json()}, {"elapsed_s", elapsed},
                {"train_time_s", train_time}, {"total_steps", total_steps},     {"state", meta_state},
                {"fingerprints", fingerprints}};
  };
  auto all_finite = [&] {
    torch::NoGradGuard ng;
    for (const auto& [name, t] : trainable)
      if (!torch::isfinite(t).all().item<bool>()) return false;
    return true;
  };
  auto diverged = [&](const std::string& what, std::int64_t at_step) {
    std::string last = latest_train_checkpoint(ckpt_dir.string());
    throw TrainingDiverged(what + " at step " + std::to_string(at_step + 1) + " (lr " +
                           fmt::format("{:.3g}", schedule.at(at_step)) + "); stopped without saving. Last good checkpoint: " +
                           (last.empty() ? std::string("none") : last) +
                           ". Lower lr or raise warmup_steps, then --resume (or start over).");
  };

  // ---- the loop
  model->train();
  const auto run_start = Clock::now();
  double train_time = train_time_before;
  double window_loss = 0.0, window_time = 0.0, last_loss = std::nan(""), last_gnorm = 0.0;
  std::int64_t window_steps = 0;
  double final_valid = std::nan("");
  json final_valid_per = json::object();
  const double clip = o.grad_clip > 0 ? o.grad_clip : std::numeric_limits<double>::infinity();
  Progress progress("training", total_steps, "steps");
  progress.set(step);

  while (step < total_steps) {
    const auto t0 = Clock::now();
    const double lr = schedule.at(step);
    for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    optimizer.zero_grad();
    torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(device));
    for (int m = 0; m < o.grad_accum; ++m) {
      auto batch = stream.next(o.micro_batch).to(device);
      auto inputs = batch.slice(1, 0, o.seq_len), targets = batch.slice(1, 1, o.seq_len + 1);
      torch::Tensor loss;
      {
        AutocastBf16 ac(device, bf16);
        loss = cross_entropy(model->forward(inputs), targets);
      }
      if (step == o.fault_nan_at_step) loss = loss + std::nan("");
      (loss / o.grad_accum).backward();
      loss_sum += loss.detach().to(torch::kFloat64);
    }
    const double train_loss = loss_sum.item<double>() / o.grad_accum;
    if (!std::isfinite(train_loss)) diverged("the training loss became " + describe_value(train_loss), step);
    const double gnorm = torch::nn::utils::clip_grad_norm_(all_params, clip);
    if (!std::isfinite(gnorm)) diverged("the gradient norm became " + describe_value(gnorm), step);
    optimizer.step();
    if (device.is_cuda()) torch::cuda::synchronize();
    ++step;
    const double dt = seconds_since(t0);
    train_time += dt;
    window_time += dt;
    window_loss += train_loss;
    ++window_steps;
    last_loss = train_loss;
    last_gnorm = gnorm;
    progress.add(1);

    const bool last_step = step == total_steps;
    if (step % o.log_every == 0 || last_step) {
      const double tps = static_cast<double>(window_steps * o.tokens_per_step()) / std::max(window_time, 1e-9);
      json line{{"kind", "train"},
                {"step", step},
                {"tokens", step * o.tokens_per_step()},
                {"loss", window_loss / static_cast<double>(window_steps)},
                {"lr", lr},
                {"grad_norm", gnorm},
                {"tokens_per_s", tps},
                {"memory_bytes", memory_bytes()},
                {"elapsed_s", elapsed_before + seconds_since(run_start)}};
      if (peak_tflops > 0) line["mfu"] = tps * flops_per_token / (peak_tflops * 1e12);
      fs::append_line(metrics_path, line.dump());
      spdlog::info("step {}/{}: loss {:.4f}, lr {:.3g}, grad norm {:.3g}, {} tokens/s", step, total_steps,
                   window_loss / static_cast<double>(window_steps), lr, gnorm, human_count(tps));
      window_loss = window_time = 0.0;
      window_steps = 0;
    }
    if ((o.eval_every > 0 && step % o.eval_every == 0) || last_step) {
      json per = json::object();
      double vl = run_eval(&per);
      fs::append_line(metrics_path,
                      json{{"kind", "eval"}, {"step", step}, {"valid_loss", vl}, {"valid_loss_per_cluster", per}}.dump());
      spdlog::info("step {}: valid loss {:.4f}", step, vl);
      if (last_step) {
        final_valid = vl;
        final_valid_per = per;
      }
    }
    if ((o.checkpoint_every > 0 && step % o.checkpoint_every == 0) || last_step) {
      if (!all_finite()) diverged("a trainable weight became NaN or infinite", step - 1);
      meta_state["last_train_loss"] = last_loss;
      save_train_checkpoint(ckpt_dir.string(), step, make_meta(elapsed_before + seconds_since(run_start), train_time),
                            trainable, optimizer, device, o.keep_checkpoints);
    }
    if (o.fault_sleep_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(o.fault_sleep_s));
  }
  progress.finish();

  // A resumed run that stopped after its last checkpoint but before the summary: evaluate now.
  if (std::isnan(final_valid)) final_valid = run_eval(&final_valid_per);
  if (std::isnan(last_loss)) last_loss = meta_state.value("last_train_loss", std::nan(""));

  // ---- the result
  if (o.lora_mode()) {
    adapter.save(o.output, o.base);
  } else {
    save_llama(model, o.output);
    stdfs::path tok = o.base.empty() ? stdfs::path(train_docs.shards().front().info().tokenizer)
                                     : stdfs::path(o.base) / "tokenizer.model";
    if (!tok.empty() && stdfs::exists(tok))
      fs::write_atomic(out / "tokenizer.model", fs::read_text(tok));
  }
  const double wall = elapsed_before + seconds_since(run_start);
  const std::int64_t tokens_seen = step * o.tokens_per_step();
  const double tps = static_cast<double>(tokens_seen) / std::max(train_time, 1e-9);
  json per_cluster = json::object();
  const json& init_per = meta_state.value("initial_valid_loss_per_cluster", json::object());
  for (auto it = final_valid_per.begin(); it != final_valid_per.end(); ++it)
    per_cluster[it.key()] = {{"initial", init_per.value(it.key(), json())}, {"final", it.value()}};
  json summary{{"mode", o.mode},
               {"clusters", clusters},
               {"base", o.base},
               {"steps", step},
               {"tokens_seen", tokens_seen},
               {"wall_time_s", wall},
               {"train_time_s", train_time},
               {"tokens_per_s", tps},
               {"final_train_loss", last_loss},
               {"final_valid_loss", final_valid},
               {"initial_valid_loss", meta_state.value("initial_valid_loss", json())},
               {"valid_loss_per_cluster", per_cluster},
               {"trainable_parameters", n_trainable},
               {"flops_per_token", flops_per_token},
               {"peak_memory_bytes", memory_bytes()},
               {"device", device.str()},
               {"bf16", bf16},
               {"resumed", meta_state.value("resumed", 0)}};
  if (peak_tflops > 0) summary["mfu"] = tps * flops_per_token / (peak_tflops * 1e12);
  fs::write_json_atomic(summary_path, summary);
  spdlog::info("finished: {} tokens in {}, {} tokens/s; train loss {:.4f}, valid loss {:.4f}",
               human_count(static_cast<double>(tokens_seen)), human_duration(wall), human_count(tps), last_loss,
               final_valid);
  return summary;
}

}  // namespace moin
