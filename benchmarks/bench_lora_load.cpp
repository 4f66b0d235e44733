// How long loading one expert takes (routed inference loads an adapter on every cache miss), for a
// TinyLlama-1.1B-shaped base (22 layers, hidden 2048, MLP 5632, 4 kv heads of 64) and r = 16 on all seven
// projections: 12.6 M parameters, 50 MB in float32. Also the time to add one to an adapter set, and the swap an expert
// change costs on a cache miss (read the file, copy to the device, add to a set) as p50/p99 over the repeats.
// The last line, RESULT {...}, carries every figure as JSON (scripts/gpu_check.py reads it).
//
//   bench_lora_load [--device cpu|cuda] [--dtype float32|bfloat16] [--repeat N] [--layers N] [--rank R]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include <unistd.h>

#include "moin/model/adapter_set.h"

using Clock = std::chrono::steady_clock;

static double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

int main(int argc, char** argv) {
  std::string device_name = "cpu", dtype_name = "float32";
  int repeat = 20, layers = 22, rank = 16;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--device") device_name = v;
    else if (k == "--dtype") dtype_name = v;
    else if (k == "--repeat") repeat = std::stoi(v);
    else if (k == "--layers") layers = std::stoi(v);
    else if (k == "--rank") rank = std::stoi(v);
  }
  const torch::Device device(device_name);
  const auto dtype = dtype_name == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
  const std::int64_t h = 2048, kv = 256, m = 5632;

  // The base's weights are allocated but never touched: only their shapes, device and dtype matter here.
  moin::NamedLinears base;
  for (const auto& p : moin::llama_projection_shapes(layers, h, kv, m)) {
    moin::Linear lin(p.in_features, p.out_features);
    lin->weight = lin->weight.to(device, dtype);  // empty() pages on the CPU stay untouched
    lin->lora_slot = static_cast<std::int64_t>(base.size());  // as the model numbers its projections
    base.emplace_back(p.name, lin);
  }
  moin::LoraOptions opts;
  opts.r = rank;
  auto adapter = moin::LoraAdapter::create(base, opts);
  const auto dir = std::filesystem::temp_directory_path() / ("moin-bench-lora-" + std::to_string(::getpid()));
  auto t0 = Clock::now();
  adapter.save(dir.string());
  const double save_ms = ms_since(t0);
  const auto bytes = std::filesystem::file_size(dir / "adapter_model.safetensors");

  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  (void)moin::LoraAdapter::load(dir.string(), base);  // warm the page cache
  sync();
  double best = 1e30, total = 0;
  std::vector<double> swaps;
  for (int i = 0; i < repeat; ++i) {
    t0 = Clock::now();
    auto a = moin::LoraAdapter::load(dir.string(), base);
    sync();
    const double t = ms_since(t0);
    best = std::min(best, t);
    total += t;
    moin::AdapterSet set(base);
    set.add(a);
    sync();
    swaps.push_back(ms_since(t0));
  }
  std::sort(swaps.begin(), swaps.end());
  auto pct = [&](double q) {  // nearest-rank percentile
    const auto k = static_cast<std::size_t>(std::ceil(q * static_cast<double>(swaps.size())));
    return swaps[std::min(swaps.size() - 1, k == 0 ? 0 : k - 1)];
  };
  t0 = Clock::now();
  for (int i = 0; i < repeat; ++i) {
    moin::AdapterSet set(base);
    set.add(adapter);
  }
  const double attach_us = 1000 * ms_since(t0) / repeat;

  std::printf("adapter: %d layers, r=%d, %lld parameters, %.1f MB on disk (%s, %s)\n", layers, rank,
              static_cast<long long>(adapter.num_parameters()), bytes / 1e6, dtype_name.c_str(), device_name.c_str());
  std::printf("save: %.1f ms\n", save_ms);
  std::printf("load (page cache warm): best %.2f ms, mean %.2f ms over %d, %.2f GB/s\n", best, total / repeat, repeat,
              bytes / (best * 1e6));
  std::printf("add to an adapter set: %.1f us\n", attach_us);
  std::printf("swap (load to %s + add to a set): p50 %.2f ms, p99 %.2f ms over %d\n", device_name.c_str(), pct(0.5),
              pct(0.99), repeat);
  std::printf("RESULT {\"device\": \"%s\", \"dtype\": \"%s\", \"layers\": %d, \"rank\": %d, \"parameters\": %lld, "
              "\"bytes\": %lld, \"load_best_ms\": %.4f, \"load_mean_ms\": %.4f, \"swap_p50_ms\": %.4f, "
              "\"swap_p99_ms\": %.4f, \"attach_detach_us\": %.3f, \"repeat\": %d}\n",
              device_name.c_str(), dtype_name.c_str(), layers, rank, static_cast<long long>(adapter.num_parameters()),
              static_cast<long long>(bytes), best, total / repeat, pct(0.5), pct(0.99), attach_us, repeat);
  std::filesystem::remove_all(dir);
  return 0;
}
