// Throughput accounting: FLOPs per trained token, model FLOPs utilisation (MFU), peak memory.
//
// FLOPs per token of one training step (forward + backward), counting matrix multiplies only, 2 FLOPs per
// multiply-add, as in Kaplan et al. (2020) and PaLM's MFU (Chowdhery et al., 2022, appendix B):
//
//   full training      6 N + 12 L T d
//   LoRA, frozen base  4 N_frozen + 6 N_lora + 12 L T d
//
// N counts the weights of every matrix multiply: the projections of all layers and the output head (the
// embedding lookup is no multiply; a tied head counts once, as the head). The forward pass costs 2 N; the
// backward 2 N for the gradients of the inputs plus 2 N for those of the weights. A frozen weight needs no
// weight gradient, hence 4 N_frozen; the adapter matrices (N_lora = sum of r (in + out)) are trained, 6.
// Attention scores and values (QK^T and AV, T keys of width d per layer, L layers) cost 4 L T d forward
// and twice that backward in either mode, 12 L T d, without discounting the causal mask (PaLM's
// convention). MFU = achieved FLOP/s / the device's peak dense bf16 FLOP/s.
#pragma once
#include <cstdint>
#include <string>

namespace moin {

struct FlopCount {
  std::int64_t matmul_params_frozen = 0;  // weights of multiplies that get no gradient
  std::int64_t matmul_params_trained = 0;  // weights of multiplies that are trained
  std::int64_t layers = 0;
  std::int64_t attn_width = 0;  // n_heads x head_dim
  std::int64_t seq_len = 0;

  // Forward + backward FLOPs per token (see the header comment).
  double per_token() const;
};

// Peak dense bf16 TFLOP/s of a GPU by its name (H100, H200, A100, ...); 0 when unknown.
double known_peak_tflops(const std::string& device_name);

// Name of CUDA device `index` ("NVIDIA H100 80GB HBM3"); empty without CUDA.
std::string cuda_device_name(int index);

// Peak resident set size of this process, bytes (getrusage).
std::int64_t peak_rss_bytes();
// Largest memory allocated by torch's caching allocator on CUDA device `index` since start; 0 without CUDA.
std::int64_t cuda_peak_allocated_bytes(int index);

}  // namespace moin
