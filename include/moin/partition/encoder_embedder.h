// The "encoder" embedder: a pre-trained sentence encoder (a sentence-transformers BERT-family folder such
// as all-MiniLM-L6-v2; model/sentence_encoder.h) embeds documents and queries. Nothing is fitted.
//
// save(dir) writes dir/embedder.json:
//   {"type": "encoder", "encoder_dir": "/abs/path", "max_length": 256, "batch_size": 32, "dim": 384,
//    "fingerprint": "<hex of config.json, vocab.txt, the safetensors header and size>"}
// The weights are not copied: load_encoder_embedder() re-opens the folder and refuses one whose
// fingerprint changed (the router must embed queries exactly as the documents were embedded).
#pragma once
#include <memory>
#include <string>

#include "moin/partition/embedder.h"

namespace moin {

// encoder_dir: the model folder; batch_size: texts per forward pass; max_length: at most this many
// tokens per text, the folder's max_seq_length (what the model was trained with, and what
// sentence-transformers truncates to) when that is smaller or max_length is 0; device: "" = CUDA when
// available, else CPU (intra-op threads on all cores).
std::unique_ptr<Embedder> make_encoder_embedder(const std::string& encoder_dir, int batch_size = 32,
                                                int max_length = 0, const std::string& device = "");

// Restores the embedder from dir/embedder.json (written by save()); UserError when the folder it names
// is gone or its fingerprint changed.
std::unique_ptr<Embedder> load_encoder_embedder(const std::string& dir);

// The fingerprint save() records: hex FNV-1a-64 over config.json, vocab.txt and model.safetensors'
// header and size (cheap: the 90 MB of weights are not read).
std::string encoder_fingerprint(const std::string& encoder_dir);

}  // namespace moin
