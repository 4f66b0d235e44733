// A sentence-transformers model folder as one object: WordPiece tokenizer -> BERT encoder -> pooling ->
// L2 normalisation. Reads the folder layout sentence-transformers writes:
//
//   config.json, model.safetensors       the BERT encoder (model/bert.h)
//   vocab.txt, tokenizer_config.json     the tokenizer (model/wordpiece.h); tokenizer.json when present
//   sentence_bert_config.json            max_seq_length (the truncation length of the reference)
//   modules.json, 1_Pooling/config.json  the pooling (mean, CLS or max) and whether a Normalize follows
//
// A plain Hugging Face BERT folder (no modules.json) gets mean pooling. Embeddings are always
// L2-normalised here (moin compares them by cosine; Normalize only changes the norm).
#pragma once
#include <torch/types.h>

#include <string>
#include <vector>

#include "moin/model/bert.h"
#include "moin/model/wordpiece.h"

namespace moin {

struct SentenceEncoderOptions {
  int max_length = 0;       // tokens per text including [CLS]/[SEP]; 0 = the folder's max_seq_length
  int batch_size = 32;      // texts per forward pass
  std::string device = "";  // "cpu", "cuda", "cuda:1"; "" = CUDA when available, else CPU
};

class SentenceEncoder {
 public:
  enum class Pooling { Mean, Cls, Max };

  // UserError naming the file for anything missing or malformed in the folder.
  static SentenceEncoder load(const std::string& dir, const SentenceEncoderOptions& opts = {});

  // The truncation length load() picks when opts.max_length is 0: sentence_bert_config.json's
  // max_seq_length, bounded by config.json's max_position_embeddings (reads only the JSON files).
  static int default_max_length(const std::string& dir);

  // Token ids ([CLS] ... [SEP], truncated to max_length()) of each text.
  std::vector<std::vector<int>> tokenize(const std::vector<std::string>& texts) const;
  // [texts.size(), dim()] float32 on the CPU, rows L2-normalised. Texts are sorted by length and cut
  // into batches of batch_size so padding stays small; the result is in the input order.
  torch::Tensor encode(const std::vector<std::string>& texts) const;
  // One batch of token id sequences -> [n, dim()] pooled, normalised, on the CPU.
  torch::Tensor encode_ids(const std::vector<std::vector<int>>& batch) const;

  int dim() const { return static_cast<int>(bert_.config().hidden_size); }
  int max_length() const { return tokenizer_.options().max_length; }
  const std::string& dir() const { return dir_; }
  const WordPiece& tokenizer() const { return tokenizer_; }
  const BertModel& bert() const { return bert_; }
  Pooling pooling() const { return pooling_; }
  torch::Device device() const { return bert_.device(); }

 private:
  SentenceEncoder(std::string dir, WordPiece tok, BertModel bert, Pooling pooling, int batch_size)
      : dir_(std::move(dir)), tokenizer_(std::move(tok)), bert_(std::move(bert)), pooling_(pooling),
        batch_size_(batch_size) {}
  std::string dir_;
  WordPiece tokenizer_;
  BertModel bert_;
  Pooling pooling_;
  int batch_size_;
};

}  // namespace moin
