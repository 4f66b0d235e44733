#include "moin/train/options.h"

#include <algorithm>

namespace moin {

TrainMode parse_train_mode(const std::string& name) {
  if (name == "expert") return TrainMode::Expert;
  if (name == "dense-lora") return TrainMode::DenseLora;
  if (name == "full") return TrainMode::Full;
  if (name == "mixture") return TrainMode::Mixture;
  if (name == "peer") return TrainMode::Peer;
  throw UserError("mode must be expert, dense-lora, full, mixture or peer (got '" + name + "')");
}

const char* train_mode_name(TrainMode mode) {
  switch (mode) {
    case TrainMode::Expert: return "expert";
    case TrainMode::DenseLora: return "dense-lora";
    case TrainMode::Full: return "full";
    case TrainMode::Mixture: return "mixture";
    case TrainMode::Peer: return "peer";
  }
  return "?";
}

void TrainOptions::validate() const {
  const TrainMode m = train_mode();
  require(!partition.empty(), "partition: the partition folder is required (--partition DIR)");
  require(!output.empty(), "output: the output folder is required (--output DIR)");
  if (m == TrainMode::Expert)
    require(cluster >= 0 || !clusters.empty(),
            "expert mode needs the cluster to train on (--cluster K), or a pack of them (--clusters 3,4,5)");
  if (!clusters.empty()) {
    require(m == TrainMode::Expert, "clusters (a pack of experts) is for expert mode only");
    require(cluster < 0, "give either cluster or clusters, not both");
    std::vector<int> sorted = clusters;
    std::sort(sorted.begin(), sorted.end());
    require(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end(), "clusters lists a cluster twice");
    require(sorted.front() >= 0, "clusters must be cluster indices (>= 0)");
  }
  require(min_train_tokens >= 0, "min_train_tokens must not be negative");
  if (m == TrainMode::Full) {
    require(!base.empty() || !model_config.empty(),
            "full mode needs a base model (--base DIR) or a model config to start from (model_config)");
    require(base.empty() || model_config.empty(), "give either base or model_config, not both");
  } else {
    require(!base.empty(), std::string(train_mode_name(m)) + " mode needs the base model (--base DIR)");
    require(model_config.empty(), "model_config is only used in full mode");
    lora.validate();
  }
  if (m == TrainMode::Mixture) {
    require(!experts.empty(), "mixture mode needs the experts to mix (--set experts=EXPERTS)");
    require(cluster < 0, "mixture mode trains on every cluster's data (cluster must be -1)");
    mixture.validate();
  }
  if (m == TrainMode::Peer) {
    require(cluster < 0, "peer mode trains on every cluster's data (cluster must be -1)");
    require(peer.num_keys > 0 || peer.params > 0 || !experts.empty(),
            "peer mode needs its size: peer.num_keys, peer.params, or the experts to match (experts)");
    peer.validate();
  }
  require(cluster >= -1, "cluster must be -1 (every cluster) or a cluster index");
  require(seq_len > 0, "seq_len must be positive");
  require(micro_batch > 0, "micro_batch must be positive");
  require(grad_accum > 0, "grad_accum must be positive");
  require(token_budget >= 0 && max_steps >= 0, "token_budget and max_steps must not be negative");
  require(token_budget > 0 || max_steps > 0,
          "train: how long to train is not set: give --max-steps N (optimizer steps) or --token-budget N (tokens per "
          "cluster); config keys max_steps and token_budget, both 0 by default");
  require(!(token_budget > 0 && max_steps > 0),
          "train: give only one of --max-steps (" + std::to_string(max_steps) + ") and --token-budget (" +
              std::to_string(token_budget) + "); config keys max_steps and token_budget");
  require(lr > 0, "lr must be positive");
  require(warmup_steps >= 0, "warmup_steps must not be negative");
  require(min_lr_ratio >= 0 && min_lr_ratio <= 1, "min_lr_ratio must lie in [0, 1]");
  require(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "beta1 and beta2 must lie in [0, 1)");
  require(eps > 0, "eps must be positive");
  require(weight_decay >= 0, "weight_decay must not be negative");
  require(grad_clip >= 0, "grad_clip must not be negative (0 disables clipping)");
  require(eval_every >= 0 && checkpoint_every >= 0, "eval_every and checkpoint_every must not be negative");
  require(eval_tokens > 0, "eval_tokens must be positive");
  require(keep_checkpoints >= 1, "keep_checkpoints must be at least 1");
  require(log_every > 0, "log_every must be positive");
  require(dtype == "auto" || dtype == "fp32" || dtype == "bf16", "dtype must be auto, fp32 or bf16");
  require(num_threads >= 0, "num_threads must not be negative");
  require(peak_tflops >= 0, "peak_tflops must not be negative");
}

}  // namespace moin
