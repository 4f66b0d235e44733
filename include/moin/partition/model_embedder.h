// The "model" embedder: mean-pooled hidden states of one layer of the frozen base LLM (model/llama.h).
//
//   ids    = [BOS] + tokenizer.encode(text), cut to max_length tokens
//   h      = hidden_states(ids, layer)   Hugging Face's output_hidden_states[layer]: 0 = the token
//            embeddings, i = the output of decoder layer i, num_hidden_layers (= -1) = the last layer's
//            output after the final RMSNorm (what transformers returns there); negative counts from the end
//   pooled = mean of h over the document's tokens (BOS excluded: position 0 sees only itself, so its
//            state is the same for every document; an empty document pools BOS alone)
//   x      = L2-normalise(pooled - mean)     mean: the average pooled vector of the fit sample (center);
//            raw LLM states share one large common direction that makes cosine k-means poor
//
// Documents are sorted by length and run in batches of batch_size, right-padded: attention is causal, so
// padding after a document never changes its positions, and pooling reads only its real positions.
// No gradients (inference mode); on the GPU when device is auto and CUDA is available.
//
// save(dir) writes dir/embedder.json and, when centred, dir/model_mean.npy ([dim] float32):
//   {"type": "model", "model_dir": "/abs", "layer": -1, "hidden_index": 5, "max_length": 512,
//    "batch_size": 32, "center": true, "dim": 64, "tokenizer": "/abs/tok.model",
//    "tokenizer_sha256": "...", "weights_sha256": "...", "pooling": "mean, BOS excluded"}
// The weights are not copied: load_model_embedder() re-opens model_dir and the tokenizer and refuses
// (UserError) a model or tokenizer whose sha256 changed, so the router embeds a query exactly as the
// partitioner embedded the documents.
#pragma once
#include <memory>
#include <string>

#include "moin/partition/embedder.h"

namespace moin {

// Reads opts.model_dir, layer, tokenizer, max_length (cut to the model's max_position_embeddings),
// batch_size, center, device. The tokenizer defaults to MODEL_DIR/tokenizer.model. UserError for a
// missing folder or tokenizer, or a layer outside [-(L+1), L].
std::unique_ptr<Embedder> make_model_embedder(const EmbedderOptions& opts);

// Restores the embedder from dir/embedder.json (+ model_mean.npy); device: "auto" (the router may run on
// another machine than the partitioner). UserError when the model or tokenizer changed or is gone.
std::unique_ptr<Embedder> load_model_embedder(const std::string& dir, const std::string& device = "auto");

// SHA-256 over config.json and every weight file's content (model.safetensors or the shards named by
// model.safetensors.index.json); reads the whole weights (about 3 s per GB).
std::string model_weights_sha256(const std::string& model_dir);

}  // namespace moin
