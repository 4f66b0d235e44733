#include "moin/train/options.h"

namespace moin {

void TrainOptions::validate() const {
  require(mode == "expert" || mode == "dense-lora" || mode == "full",
          "mode must be expert, dense-lora or full (got '" + mode + "')");
  require(!partition.empty(), "partition: the partition folder is required (--partition DIR)");
  require(!output.empty(), "output: the output folder is required (--output DIR)");
  if (mode == "expert") require(cluster >= 0, "expert mode needs the cluster to train on (--cluster K)");
  if (mode == "full") {
    require(!base.empty() || !model_config.empty(),
            "full mode needs a base model (--base DIR) or a model config to start from (model_config)");
    require(base.empty() || model_config.empty(), "give either base or model_config, not both");
  } else {
    require(!base.empty(), mode + " mode needs the base model (--base DIR)");
    require(model_config.empty(), "model_config is only used in full mode");
    lora.validate();
  }
  require(cluster >= -1, "cluster must be -1 (every cluster) or a cluster index");
  require(seq_len > 0, "seq_len must be positive");
  require(micro_batch > 0, "micro_batch must be positive");
  require(grad_accum > 0, "grad_accum must be positive");
  require(token_budget >= 0 && max_steps >= 0, "token_budget and max_steps must not be negative");
  require((token_budget > 0) != (max_steps > 0), "give exactly one of token_budget and max_steps");
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
