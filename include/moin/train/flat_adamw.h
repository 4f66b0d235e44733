// AdamW and gradient-norm clipping over one run's parameters held in a single flat buffer.
//
// The update is torch::optim::AdamW's (decoupled weight decay, the two moments, bias corrections) and the
// clipping is clip_grad_norm_'s, but each is a handful of kernels over one buffer instead of a handful per
// tensor. An expert's LoRA is ~70 small tensors: per tensor, dispatch costs more than the arithmetic, and a
// pack of 50 experts pays it 50 times a step.
//
// The parameters stay the same leaf tensors (the model, the adapter set and checkpoints keep using them);
// their storage and their gradients become views into the flat buffers. The state lives in a
// torch::optim::AdamW (`torch_optimizer()`) whose moments are views into the flat moments, so checkpoints
// keep torch's format: save it as it is, and call `adopt_loaded_state()` after loading one into it.
#pragma once
#include <torch/optim/adamw.h>

#include <memory>
#include <vector>

namespace moin {

class FlatAdamW {
 public:
  // params: leaves of one dtype on one device; all decayed with `weight_decay` (LoRA's A and B are 2-D).
  FlatAdamW(std::vector<torch::Tensor> params, const torch::optim::AdamWOptions& options);

  // Gradients accumulate into the flat buffer, so they are zeroed in place, never set to none.
  void zero_grad();
  // clip_grad_norm_(params, max_norm): scales the gradients by max_norm / (norm + 1e-6) when that is < 1.
  // Returns the norm before clipping (NaN or infinite when a gradient is).
  double clip_grad_norm(double max_norm);
  // One AdamW step at learning rate lr.
  void step(double lr);

  // The state in torch's form (moments are views into the flat buffers; step counts set before returning).
  torch::optim::AdamW& torch_optimizer();
  // After torch_optimizer().load(...): copies the loaded moments into the flat buffers and points the
  // state at them again.
  void adopt_loaded_state();
  std::int64_t steps() const { return step_; }
  bool all_finite() const;

 private:
  void point_state_at_flat();

  std::vector<torch::Tensor> params_;
  std::vector<std::int64_t> offsets_;
  torch::Tensor flat_, grad_, exp_avg_, exp_avg_sq_;
  double beta1_, beta2_, eps_, weight_decay_;
  std::int64_t step_ = 0;
  std::unique_ptr<torch::optim::AdamW> torch_;
};

}  // namespace moin
