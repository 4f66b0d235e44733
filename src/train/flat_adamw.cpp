#include "moin/train/flat_adamw.h"

#include <cmath>

#include "moin/core/error.h"

namespace moin {

FlatAdamW::FlatAdamW(std::vector<torch::Tensor> params, const torch::optim::AdamWOptions& options)
    : params_(std::move(params)),
      beta1_(std::get<0>(options.betas())),
      beta2_(std::get<1>(options.betas())),
      eps_(options.eps()),
      weight_decay_(options.weight_decay()) {
  require(!params_.empty(), "flat adamw: no parameters");
  require(!options.amsgrad(), "flat adamw: amsgrad is not supported");
  std::int64_t n = 0;
  for (const auto& p : params_) {
    require(p.is_leaf() && p.requires_grad(), "flat adamw: parameters must be leaves that require grad");
    require(p.scalar_type() == params_.front().scalar_type() && p.device() == params_.front().device(),
            "flat adamw: parameters must share one dtype and device");
    offsets_.push_back(n);
    n += p.numel();
  }
  auto opts = params_.front().options();
  flat_ = torch::empty({n}, opts);
  grad_ = torch::zeros({n}, opts);
  exp_avg_ = torch::zeros({n}, opts);
  exp_avg_sq_ = torch::zeros({n}, opts);
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i];
    auto slot = flat_.narrow(0, offsets_[i], p.numel()).view(p.sizes());
    slot.copy_(p);
    p.set_data(slot);  // same leaf (same autograd identity), storage now in flat_
    p.mutable_grad() = grad_.narrow(0, offsets_[i], p.numel()).view(p.sizes());
  }
  torch_ = std::make_unique<torch::optim::AdamW>(params_, options);
  point_state_at_flat();
}

void FlatAdamW::point_state_at_flat() {
  auto& state = torch_->state();
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i];
    auto s = std::make_unique<torch::optim::AdamWParamState>();
    s->step(step_);
    s->exp_avg(exp_avg_.narrow(0, offsets_[i], p.numel()).view(p.sizes()));
    s->exp_avg_sq(exp_avg_sq_.narrow(0, offsets_[i], p.numel()).view(p.sizes()));
    state[p.unsafeGetTensorImpl()] = std::move(s);
  }
}

bool FlatAdamW::all_finite() const {
  torch::NoGradGuard no_grad;
  return torch::isfinite(flat_).all().item<bool>();
}

void FlatAdamW::zero_grad() { grad_.zero_(); }

double FlatAdamW::clip_grad_norm(double max_norm) {
  torch::NoGradGuard no_grad;
  const double norm = grad_.norm(2).item<double>();
  if (!std::isfinite(norm)) return norm;
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) grad_.mul_(coef);
  return norm;
}

void FlatAdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  // The order of torch::optim::AdamW::step, over one buffer.
  if (weight_decay_ != 0.0) flat_.mul_(1 - lr * weight_decay_);
  const double bias_correction1 = 1 - std::pow(beta1_, static_cast<double>(step_));
  const double bias_correction2 = 1 - std::pow(beta2_, static_cast<double>(step_));
  exp_avg_.mul_(beta1_).add_(grad_, 1 - beta1_);
  exp_avg_sq_.mul_(beta2_).addcmul_(grad_, grad_, 1 - beta2_);
  auto denom = (exp_avg_sq_.sqrt() / std::sqrt(bias_correction2)).add_(eps_);
  flat_.addcdiv_(exp_avg_, denom, -lr / bias_correction1);
}

torch::optim::AdamW& FlatAdamW::torch_optimizer() {
  for (auto& [key, s] : torch_->state()) static_cast<torch::optim::AdamWParamState&>(*s).step(step_);
  return *torch_;
}

void FlatAdamW::adopt_loaded_state() {
  torch::NoGradGuard no_grad;
  auto& state = torch_->state();
  std::int64_t loaded_step = -1;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i];
    auto it = state.find(p.unsafeGetTensorImpl());
    if (it == state.end()) {
      exp_avg_.narrow(0, offsets_[i], p.numel()).zero_();
      exp_avg_sq_.narrow(0, offsets_[i], p.numel()).zero_();
      continue;
    }
    const auto& s = static_cast<const torch::optim::AdamWParamState&>(*it->second);
    exp_avg_.narrow(0, offsets_[i], p.numel()).copy_(s.exp_avg().reshape({-1}));
    exp_avg_sq_.narrow(0, offsets_[i], p.numel()).copy_(s.exp_avg_sq().reshape({-1}));
    require(loaded_step < 0 || loaded_step == s.step(),
            "flat adamw: the checkpoint's parameters have different step counts");
    loaded_step = s.step();
  }
  step_ = std::max<std::int64_t>(0, loaded_step);
  point_state_at_flat();
}

}  // namespace moin
