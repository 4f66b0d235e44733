// The options of one training run (`moin train`): an expert (one LoRA adapter on one cluster of a
// partition), the dense-LoRA baseline (one LoRA adapter of the same rank on every cluster's data, with the
// experts' total token budget), or full-parameter training (pre-training a small base from scratch, or
// continued pre-training of a base on the tokens the experts saw).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "moin/core/config.h"
#include "moin/model/lora.h"
#include "moin/model/mixture.h"
#include "moin/model/peer.h"

namespace moin {

// What a run trains: one LoRA adapter on one cluster (or a pack of clusters, one adapter each), one LoRA
// adapter on every cluster's data, every parameter of the model, or the routers of a token-level mixture
// of the trained experts (model/mixture.h; with mixture.train_experts the experts too) on every cluster's
// data, or PEER blocks beside the MLPs of the frozen base (model/peer.h) on every cluster's data. The one
// place that knows the modes.
enum class TrainMode { Expert, DenseLora, Full, Mixture, Peer };
// "expert", "dense-lora", "full", "mixture", "peer"; UserError otherwise
TrainMode parse_train_mode(const std::string& name);
const char* train_mode_name(TrainMode mode);
// A fresh LoRA adapter is the result (expert, dense-lora).
inline bool trains_adapter(TrainMode mode) { return mode == TrainMode::Expert || mode == TrainMode::DenseLora; }
// The base model's own weights stay frozen (every mode but full).
inline bool freezes_base(TrainMode mode) { return mode != TrainMode::Full; }

struct TrainOptions {
  // What is trained, on which data, from which base, to where.
  std::string mode = "expert";
  std::string partition;
  int cluster = -1;
  std::vector<int> clusters;
  std::int64_t min_train_tokens = 0;
  std::string base;
  std::string model_config;
  std::string output;
  LoraOptions lora;
  std::string experts;     // mixture mode: the experts folder (EXPERTS/<k>/, one adapter per cluster)
  MixtureOptions mixture;  // mixture mode: routers, top-k, balance
  PeerOptions peer;        // peer mode: the blocks' layers, size, heads, top-k

  // Batches and budget.
  int seq_len = 256;
  int micro_batch = 8;
  int grad_accum = 1;
  std::int64_t token_budget = 0;
  std::int64_t max_steps = 0;
  bool add_bos = true;

  // Optimizer and schedule.
  double lr = 2e-4;
  std::int64_t warmup_steps = 0;
  double min_lr_ratio = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double grad_clip = 1.0;

  // Evaluation, checkpoints, logs.
  std::int64_t eval_every = 100;
  std::int64_t eval_tokens = 16384;
  std::int64_t checkpoint_every = 100;
  int keep_checkpoints = 2;
  bool keep_final_checkpoint = false;
  std::int64_t log_every = 10;

  // Reproducibility and hardware.
  std::uint64_t seed = 0;
  std::string device = "auto";
  std::string dtype = "auto";
  int num_threads = 0;
  double peak_tflops = 0.0;

  // Testing hooks.
  std::int64_t fault_nan_at_step = -1;
  double fault_sleep_s = 0.0;

  template <class V> void visit(V& v) {
    v("mode", mode,
      "expert (one LoRA adapter on one cluster), dense-lora (one LoRA adapter on every cluster's data) or "
      "full (every parameter: pre-training or continued pre-training) or mixture (a learned token-level router "
      "over the trained experts in every layer, on every cluster's data; BTX / BAM / PESC) or peer (PEER blocks "
      "beside the MLPs of the frozen base, on every cluster's data)");
    v("partition", partition, "partition folder (manifest.json, clusters/<k>/train.bin|valid.bin)");
    v("cluster", cluster, "cluster trained on (expert mode); -1 in dense-lora/full: every cluster");
    v("clusters", clusters,
      "expert mode, packed: train these clusters' experts in one process (one mixed-adapter forward and backward "
      "per step through the shared base, each expert with its own optimizer, schedule, checkpoints and summary); "
      "output is then the experts folder and expert k goes to OUTPUT/<k>");
    v("min_train_tokens", min_train_tokens,
      "expert mode: a cluster with fewer training tokens gets no expert (OUTPUT/summary.json says status "
      "\"too_small\"; its queries route to the base); 0: one training sequence (seq_len + 1 tokens)");
    v("base", base, "base model folder (Hugging Face layout); empty in full mode: start from model_config");
    v("experts", experts, "mixture mode: folder of the experts to mix (EXPERTS/<k>/, as moin launch writes it); "
      "peer mode: the experts whose parameters the blocks match (with peer.num_keys and peer.params 0)");
    v("mixture", mixture, "mixture mode: the routers (model/mixture.h)");
    v("peer", peer, "peer mode: the PEER blocks (model/peer.h)");
    v("model_config", model_config,
      "full mode without a base: config.json of the model to initialise randomly (seeded by seed)");
    v("output", output, "output folder (adapter or model, summary.json, metrics.jsonl, checkpoints/)");
    v("lora", lora, "the LoRA adapter (expert and dense-lora modes)");
    v("seq_len", seq_len, "tokens per training sequence (documents are packed, EOS between them)");
    v("micro_batch", micro_batch, "sequences per forward/backward pass");
    v("grad_accum", grad_accum, "micro-batches accumulated per optimizer step");
    v("token_budget", token_budget,
      "training tokens per cluster (0: use max_steps); runs over several clusters (dense-lora, full on a "
      "partition) train on token_budget x clusters, the experts' total");
    v("max_steps", max_steps, "optimizer steps (used when token_budget is 0)");
    v("add_bos", add_bos, "start every packed document with BOS (EOS always ends one)");
    v("lr", lr, "peak learning rate");
    v("warmup_steps", warmup_steps, "linear warmup from lr/warmup_steps to lr over this many steps");
    v("min_lr_ratio", min_lr_ratio, "cosine decay ends at lr x min_lr_ratio at the last step");
    v("beta1", beta1, "AdamW beta1");
    v("beta2", beta2, "AdamW beta2");
    v("eps", eps, "AdamW epsilon");
    v("weight_decay", weight_decay, "AdamW decoupled weight decay (never on 1-D parameters: norms, biases)");
    v("grad_clip", grad_clip, "clip the global gradient norm to this (0 disables)");
    v("eval_every", eval_every, "validation every N steps (0: only at the start and the end)");
    v("eval_tokens", eval_tokens, "validation tokens per cluster: a fixed set of sequences of the valid split");
    v("checkpoint_every", checkpoint_every, "checkpoint every N steps (0: only at the end)");
    v("keep_checkpoints", keep_checkpoints, "checkpoints kept in checkpoints/ (older ones are deleted)");
    v("keep_final_checkpoint", keep_final_checkpoint,
      "keep checkpoints/ after a successful finish (default: removed; the optimizer state is ~3x the adapter)");
    v("log_every", log_every, "a metrics.jsonl line (and a log line) every N steps");
    v("seed", seed, "seed of the data order, of dropout and of a from-scratch model");
    v("device", device, "auto (CUDA when available), cpu, cuda or cuda:N");
    v("dtype", dtype, "auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16 (autocast)");
    v("num_threads", num_threads, "CPU threads for torch (0: torch's default)");
    v("peak_tflops", peak_tflops,
      "device peak (dense bf16 TFLOP/s) for MFU; 0: known GPUs by name, none on CPU");
    v("fault_nan_at_step", fault_nan_at_step, "testing: make the loss NaN at this step (-1: never)");
    v("fault_sleep_s", fault_sleep_s, "testing: sleep this long after each step (to kill a run mid-way)");
  }

  void validate() const;

  TrainMode train_mode() const { return parse_train_mode(mode); }
  bool lora_mode() const { return freezes_base(train_mode()); }
  bool packed() const { return !clusters.empty(); }
  // The fewest training tokens an expert is trained on.
  std::int64_t min_tokens() const { return min_train_tokens > 0 ? min_train_tokens : seq_len + 1; }
  // Tokens one optimizer step consumes.
  std::int64_t tokens_per_step() const {
    return static_cast<std::int64_t>(seq_len) * micro_batch * grad_accum;
  }
};

}  // namespace moin
