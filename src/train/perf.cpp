#include "moin/train/perf.h"

#include <sys/resource.h>
#include <torch/cuda.h>

#include <ATen/DeviceAccelerator.h>

// The device's name needs the CUDA runtime headers; a build without the toolkit reports no name (MFU then
// needs peak_tflops set by hand).
#if __has_include(<cuda_runtime_api.h>) && __has_include(<ATen/cuda/CUDAContext.h>)
#include <ATen/cuda/CUDAContext.h>
#define MOIN_HAVE_CUDA_PROPS 1
#endif

#include <cctype>
#include <utility>
#include <vector>

namespace moin {

double FlopCount::per_token() const {
  double attn = 12.0 * static_cast<double>(layers) * static_cast<double>(seq_len) * static_cast<double>(attn_width);
  return 4.0 * static_cast<double>(matmul_params_frozen) + 6.0 * static_cast<double>(matmul_params_trained) +
         attn;
}

double known_peak_tflops(const std::string& device_name) {
  std::string n;
  for (char c : device_name) n += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  // Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, most specific first.
  static const std::vector<std::pair<const char*, double>> table = {
      {"H200", 989.4}, {"GH200", 989.4}, {"H100 PCIE", 756.0}, {"H100 NVL", 835.0}, {"H100", 989.4},
      {"H800", 989.4}, {"B200", 2250.0}, {"A100", 312.0},      {"A800", 312.0},     {"L40S", 362.1},
      {"L4", 121.0},   {"A10G", 70.0},   {"A10", 125.0},       {"RTX 4090", 165.2}, {"RTX 3090", 71.0},
      {"V100", 125.0}, {"T4", 65.0},
  };
  for (const auto& [key, tflops] : table)
    if (n.find(key) != std::string::npos) return tflops;
  return 0.0;
}

std::string cuda_device_name(int index) {
#ifdef MOIN_HAVE_CUDA_PROPS
  if (!torch::cuda::is_available() || index >= static_cast<int>(torch::cuda::device_count())) return "";
  return at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(index))->name;
#else
  (void)index;
  return "";
#endif
}

std::int64_t peak_rss_bytes() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<std::int64_t>(ru.ru_maxrss) * 1024;  // Linux reports kilobytes
}

std::int64_t cuda_peak_allocated_bytes(int index) {
  if (!torch::cuda::is_available()) return 0;
  auto stats = at::accelerator::getDeviceStats(static_cast<c10::DeviceIndex>(index));
  return stats.allocated_bytes[static_cast<std::size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
}

}  // namespace moin
