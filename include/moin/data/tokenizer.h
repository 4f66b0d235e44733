// SentencePiece tokenizer. The sentencepiece library is reached through libmoin_spm.so (see
// src/data/spm_shim/spm_shim.h); this class is the only way the rest of moin uses it. Encoding is
// thread-safe on one Tokenizer.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace moin {

class Tokenizer {
 public:
  // UserError naming the file when it is missing or not a SentencePiece model.
  static Tokenizer load(const std::string& model_path);

  std::vector<int> encode(std::string_view text) const;
  std::string decode(const std::vector<int>& ids) const;
  std::string id_to_piece(int id) const;

  int vocab_size() const { return vocab_size_; }
  int bos_id() const { return bos_; }
  int eos_id() const { return eos_; }
  int pad_id() const { return pad_; }
  int unk_id() const { return unk_; }
  const std::string& path() const { return path_; }

 private:
  std::shared_ptr<void> handle_;
  std::string path_;
  int vocab_size_ = 0, bos_ = -1, eos_ = -1, pad_ = -1, unk_ = -1;
};

// Options of `moin tokenizer train`.
struct TokenizerTrainOptions {
  std::vector<std::string> input;   // text files, one sentence/document per line
  std::string model_prefix;         // writes PREFIX.model and PREFIX.vocab
  int vocab_size = 4096;
  std::string model_type = "bpe";   // bpe or unigram
  double character_coverage = 0.9995;
  std::int64_t input_sentence_size = 200000;  // lines sampled for training (0 = all)
  int max_sentence_length = 8192;   // bytes; longer lines are skipped by the trainer
  int num_threads = 0;              // 0 = all cores
  bool byte_fallback = true;

  template <class V> void visit(V& v) {
    v("input", input, "text files to train on (one document or sentence per line)");
    v("model_prefix", model_prefix, "output prefix: writes PREFIX.model and PREFIX.vocab");
    v("vocab_size", vocab_size, "vocabulary size");
    v("model_type", model_type, "bpe or unigram");
    v("character_coverage", character_coverage, "fraction of characters covered by the vocabulary");
    v("input_sentence_size", input_sentence_size, "lines sampled for training (0 = all)");
    v("max_sentence_length", max_sentence_length, "longest line in bytes the trainer accepts");
    v("num_threads", num_threads, "trainer threads (0 = all cores)");
    v("byte_fallback", byte_fallback, "encode unknown characters as bytes instead of <unk>");
  }
  void validate() const;
};

// Trains a SentencePiece model with fixed special ids: unk 0, bos 1, eos 2, pad 3.
void train_tokenizer(const TokenizerTrainOptions& opts);

}  // namespace moin
