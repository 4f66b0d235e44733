// The trainer: one run of train/options.h (an expert, the dense-LoRA baseline, or full training), or a
// pack of experts (TrainOptions::clusters) trained in one process: each step draws a micro-batch from every
// expert's cluster and runs one mixed-adapter forward and backward through the shared frozen base; each
// expert keeps its own optimizer, schedule, data order, checkpoints and summary, so it ends where it would
// have ended trained alone (to floating-point tolerance).
//
// Output folder (TrainOptions::output; in a pack, OUTPUT/<k> for each expert k):
//   adapter_config.json, adapter_model.safetensors   the LoRA adapter, PEFT layout (expert, dense-lora)
//   config.json, model.safetensors                   the model, Hugging Face layout (full)
//   summary.json       written last: status "done" (tokens seen, wall time, tokens/s, final train and valid
//                      loss, ...; "validation": "no validation set" when the cluster has none; in a pack,
//                      "pack" and the expert's share of the time), or status "too_small" (a cluster under
//                      min_train_tokens: no adapter, its queries route to the base)
//   metrics.jsonl      one JSON line per log step (and one per evaluation)
//   checkpoints/       step-<N>.pt and latest.json (train/train_checkpoint.h); removed after a successful
//                      finish unless keep_final_checkpoint
// A run whose summary.json exists is finished.
#pragma once
#include <nlohmann/json.hpp>
#include <torch/optim/adamw.h>
#include <torch/types.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "moin/model/llama.h"
#include "moin/train/options.h"
#include "moin/train/train_checkpoint.h"

namespace moin {

// The loss or the gradient norm became NaN or infinite: the run stops (exit 1) without writing a
// checkpoint, so the last good one stays the newest.
struct TrainingDiverged : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Runs the training described by `opts`. With `resume`, continues from the newest checkpoint in
// OUTPUT/checkpoints (a fresh start when there is none; the summary as it is when the run has finished).
// Without it, an output folder that already holds checkpoints is a UserError. Returns summary.json's
// content (in a pack: {"pack", "experts": {k: summary}, "wall_time_s"}).
// overwrite: a finished run's folder (summary.json) is trained again from step 0; without it (nor resume)
// such a folder is refused, so repeating a command cannot replace a finished expert.
nlohmann::json train(const TrainOptions& opts, bool resume = false, bool overwrite = false);

// UserError when the output folder is an input folder (the partition, the base, the experts a mixture
// reads) or lies inside one. The CLI calls it before it writes its log and config there; train() again.
void check_output_folder(const TrainOptions& opts);

// Whether the run folder `dir` holds a finished run (summary.json); UserError naming --resume and
// --overwrite when it does and neither is given. The CLI calls it before it writes anything there.
bool finished_run(const std::string& dir, bool resume, bool overwrite);

// AdamW over `trainable` (the adapter's A and B in LoRA modes, every weight in full mode): group 0 the
// tensors of 2 or more dimensions with opts.weight_decay, group 1 the 1-D ones (norms, biases) without.
std::unique_ptr<torch::optim::AdamW> make_adamw(const NamedTensors& trainable, const TrainOptions& opts);

// Optimizer steps of a run: ceil(token_budget x clusters / tokens per step), or max_steps.
std::int64_t total_train_steps(const TrainOptions& opts, int clusters_in_run);

// Mean cross-entropy per predicted token of `model` over the rows of `sequences` ([n, T + 1] int64;
// inputs are the first T tokens, targets the last T), `batch` rows at a time, without gradients; the
// model is put in eval mode and left so. NaN when there are no rows.
double evaluate_loss(LlamaForCausalLM& model, const torch::Tensor& sequences, int batch, torch::Device device,
                     bool autocast_bf16, const LoraRouting* lora = nullptr);

}  // namespace moin
