// Forward throughput of an 11M-parameter Llama on the CPU (or CUDA with --device cuda): tokens per
// second for a few batch x sequence shapes, inference (no grad) and training (forward + backward), and
// the peak resident memory of the process. Usage: bench_model_forward [--device cpu|cuda] [--dtype D]
// [--threads N] [--iters N] [--forward-only 1]. Inference runs under torch's inference mode, as
// benchmarks/peer_forward.py runs transformers (which prints both side by side).
#include <sys/resource.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "moin/core/process.h"
#include "moin/model/checkpoint.h"
#include "moin/model/llama.h"

namespace {

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;  // Linux reports KiB
}

void sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

}  // namespace

int main(int argc, char** argv) {
  std::string device_name = "cpu", dtype_name = "float32";
  int threads = 0, iters = 5;
  bool forward_only = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--device")) device_name = argv[i + 1];
    else if (!std::strcmp(argv[i], "--dtype")) dtype_name = argv[i + 1];
    else if (!std::strcmp(argv[i], "--threads")) threads = std::stoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--iters")) iters = std::stoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--forward-only")) forward_only = std::stoi(argv[i + 1]) != 0;
  }
  moin::reuse_freed_memory();  // as the moin CLI runs
  if (threads > 0) torch::set_num_threads(threads);
  const auto device = moin::parse_device(device_name);
  const auto dtype = moin::parse_dtype(dtype_name);

  auto cfg = moin::InitModelOptions::small_model();  // 11.0M parameters
  auto model = moin::make_llama(cfg, dtype, device, 0);
  std::printf("model: %lld parameters (hidden %lld, layers %lld, heads %lld/%lld kv, vocab %lld), %s on %s, "
              "%d threads\n",
              static_cast<long long>(cfg.num_parameters()), static_cast<long long>(cfg.hidden_size),
              static_cast<long long>(cfg.num_hidden_layers), static_cast<long long>(cfg.num_attention_heads),
              static_cast<long long>(cfg.num_key_value_heads), static_cast<long long>(cfg.vocab_size),
              dtype_name.c_str(), device.str().c_str(), torch::get_num_threads());
  std::printf("%-10s %6s %6s %14s %12s\n", "mode", "batch", "seq", "tokens/s", "peak RSS MiB");

  const std::pair<int, int> shapes[] = {{1, 128}, {8, 128}, {4, 512}, {16, 256}};
  for (const bool train : {false, true}) {
    if (train && forward_only) break;
    if (train) model->train(); else model->eval();
    for (auto [B, T] : shapes) {
      auto tokens = torch::randint(0, cfg.vocab_size, {B, T}, torch::TensorOptions().dtype(torch::kInt64).device(device));
      auto step = [&] {
        if (train) {
          auto loss = moin::cross_entropy(model->forward(tokens).narrow(1, 0, T - 1), tokens.narrow(1, 1, T - 1));
          loss.backward();
          model->zero_grad();
        } else {
          c10::InferenceMode g;
          model->forward(tokens);
        }
      };
      step();  // warm-up
      sync(device);
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < iters; ++i) step();
      sync(device);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("%-10s %6d %6d %14.0f %12.0f\n", train ? "fwd+bwd" : "forward", B, T, double(B) * T * iters / s,
                  peak_rss_mib());
      std::fflush(stdout);
    }
  }
  return 0;
}
