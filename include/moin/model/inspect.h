// Debugging aid: run a checkpoint on given token ids and write its logits (and optionally one layer's
// hidden states, or the gradients of an adapter) to a safetensors file, so other implementations
// (transformers, peft, llama2.c) can be compared.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moin {

// Options of `moin logits`.
struct LogitsDumpOptions {
  std::string model;                 // checkpoint folder
  std::string adapter;               // LoRA adapter folder (PEFT layout), optional
  std::vector<std::int64_t> tokens;  // one sequence of token ids
  std::string output;                // .safetensors file to write
  std::string dtype = "float32";
  std::string device = "cpu";
  std::int64_t hidden_layer = -1000;  // also write "hidden_states" of this layer (HF indexing); -1000: none
  bool adapter_grads = false;         // also write d(loss)/d(A, B) of the adapter and the loss
  bool autocast_bf16 = false;         // run the forward under bf16 autocast (as training does on a GPU)
  std::vector<std::string> arrow;     // a library of adapter folders routed by Arrow (instead of --adapter)
  int arrow_top_k = 3;
  double arrow_temperature = 1.0;
  std::string mixture;                // a learned mixture folder (model/mixture.h), instead of --adapter
  std::string peer;                   // a PEER folder (model/peer.h): its blocks beside the MLPs

  template <class V> void visit(V& v) {
    v("model", model, "checkpoint folder");
    v("adapter", adapter, "LoRA adapter folder (PEFT layout) to attach, optional");
    v("tokens", tokens, "token ids of one sequence");
    v("output", output, "safetensors file to write: \"logits\" [1, T, vocab] float32");
    v("dtype", dtype, "compute dtype: float32, bfloat16 or float16");
    v("device", device, "cpu, cuda, cuda:N or auto");
    v("hidden_layer", hidden_layer,
      "also write \"hidden_states\" [1, T, hidden] of this layer (0 = embeddings, -1 = after the final norm; "
      "-1000: none)");
    v("adapter_grads", adapter_grads,
      "also write the gradients of the mean next-token cross-entropy over the tokens with respect to the "
      "adapter's matrices, as \"grad.<PEFT tensor name>\", and \"loss\" (needs adapter)");
    v("autocast_bf16", autocast_bf16,
      "run the forward (and backward) under bf16 autocast with float32 weights, as training does on a GPU");
    v("arrow", arrow, "adapter folders (PEFT layout) mixed per token by Arrow routing (model/arrow.h), instead of --adapter");
    v("arrow_top_k", arrow_top_k, "with arrow: adapters mixed per token and projection");
    v("arrow_temperature", arrow_temperature, "with arrow: softmax temperature over the top-k similarities");
    v("mixture", mixture, "a learned token-level mixture folder (mixture.json, router.safetensors; the experts it "
      "names), instead of --adapter");
    v("peer", peer, "a folder of trained PEER blocks (peer.json, peer.safetensors) added beside the MLPs, instead "
      "of --adapter");
  }
  void validate() const;
};

void dump_logits(const LogitsDumpOptions& opts);

}  // namespace moin
