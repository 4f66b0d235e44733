// FlatAdamW against torch's own AdamW and clip_grad_norm_ (the independent reference), and its checkpoint
// round trip through torch's optimizer archive.
#include <gtest/gtest.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "moin/train/flat_adamw.h"

namespace {

std::vector<torch::Tensor> make_params(int seed) {
  torch::manual_seed(seed);
  std::vector<torch::Tensor> ps;
  for (auto shape : std::vector<std::vector<std::int64_t>>{{4, 16}, {24, 4}, {3, 5}, {7, 7}})
    ps.push_back(torch::randn(shape).requires_grad_(true));
  return ps;
}

std::vector<torch::Tensor> clones(const std::vector<torch::Tensor>& ps) {
  std::vector<torch::Tensor> out;
  for (const auto& p : ps) out.push_back(p.detach().clone().requires_grad_(true));
  return out;
}

// Gradients of a fixed function of the parameters, large enough for clipping to bite on some steps.
void backward(const std::vector<torch::Tensor>& ps, int step) {
  torch::Tensor loss = torch::zeros({});
  for (std::size_t i = 0; i < ps.size(); ++i)
    loss = loss + ((ps[i] - 0.1 * static_cast<double>(step)).pow(3).sum() * (1.0 + static_cast<double>(i)));
  loss.backward();
}

torch::optim::AdamWOptions options() { return torch::optim::AdamWOptions(0.01).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1); }

double max_diff(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double d = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, (a[i] - b[i]).abs().max().item<double>());
  return d;
}

TEST(FlatAdamW, EqualsTorchAdamWWithClipping) {
  auto ref = make_params(3);
  auto mine = clones(ref);
  torch::optim::AdamW torch_opt(ref, options());
  moin::FlatAdamW flat(mine, options());
  const std::vector<double> lrs = {0.01, 0.02, 0.005, 0.01, 0.03, 0.001};
  for (int step = 0; step < 6; ++step) {
    for (auto& g : torch_opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lrs[step]);
    torch_opt.zero_grad();
    backward(ref, step);
    const double ref_norm = torch::nn::utils::clip_grad_norm_(ref, 5.0);
    torch_opt.step();

    flat.zero_grad();
    backward(mine, step);
    const double norm = flat.clip_grad_norm(5.0);
    flat.step(lrs[step]);
    EXPECT_NEAR(norm, ref_norm, 1e-4 * ref_norm) << "step " << step;
    EXPECT_LT(max_diff(ref, mine), 1e-6) << "step " << step;
  }
  EXPECT_EQ(flat.steps(), 6);
  // Same leaves: the optimizer moved the tensors the caller holds.
  EXPECT_TRUE(mine[0].is_leaf());
}

TEST(FlatAdamW, CheckpointThroughTorchArchiveResumesExactly) {
  auto a = make_params(5);
  moin::FlatAdamW straight(a, options());
  auto b = clones(a);
  auto first = std::make_unique<moin::FlatAdamW>(b, options());
  for (int step = 0; step < 3; ++step) {
    for (auto* run : {&straight, first.get()}) run->zero_grad();
    backward(a, step);
    backward(b, step);
    straight.step(0.01);
    first->step(0.01);
  }
  torch::serialize::OutputArchive out;
  first->torch_optimizer().save(out);
  std::ostringstream bytes;
  out.save_to(bytes);
  // A new process: new parameters with the saved values, a new optimizer, the archive loaded into it.
  auto c = clones(b);
  first.reset();
  moin::FlatAdamW resumed(c, options());
  torch::serialize::InputArchive in;
  std::istringstream read(bytes.str());
  in.load_from(read);
  resumed.torch_optimizer().load(in);
  resumed.adopt_loaded_state();
  EXPECT_EQ(resumed.steps(), 3);
  for (int step = 3; step < 6; ++step) {
    straight.zero_grad();
    resumed.zero_grad();
    backward(a, step);
    backward(c, step);
    straight.step(0.01);
    resumed.step(0.01);
  }
  EXPECT_LT(max_diff(a, c), 1e-7);
}

}  // namespace
