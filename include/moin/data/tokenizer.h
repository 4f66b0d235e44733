// Tokenizers: one interface, two implementations chosen by the file.
//   - a SentencePiece .model (src/data/tokenizer.cpp; sentencepiece is reached through libmoin_spm.so, see
//     src/data/spm_shim/spm_shim.h);
//   - a Hugging Face tokenizer.json byte-level BPE, as GPT-2, Llama-3, Qwen2 and SmolLM ship
//     (src/data/hf_tokenizer.cpp; pure C++, docs/tokenizers.md).
// Tokenizer is a cheap, copyable handle on an immutable backend. Encoding is thread-safe on one Tokenizer.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace moin {

// What a tokenizer implementation provides. Ids the file does not define are -1.
class TokenizerBackend {
 public:
  virtual ~TokenizerBackend() = default;
  // add_special: what the tokenizer adds around a text on its own (Hugging Face's add_special_tokens):
  // BOS for SentencePiece, the post-processor's template (e.g. Llama-3's <|begin_of_text|>) for tokenizer.json.
  virtual std::vector<int> encode(std::string_view text, bool add_special) const = 0;
  // skip_special: leave out special tokens (BOS, EOS, added special tokens).
  virtual std::string decode(const std::vector<int>& ids, bool skip_special) const = 0;
  virtual std::string id_to_piece(int id) const = 0;

  std::string kind;  // "sentencepiece" or "tokenizer.json"
  int vocab_size = 0, bos = -1, eos = -1, pad = -1, unk = -1;
};

class Tokenizer {
 public:
  // The file decides the kind: a tokenizer.json (a JSON object) or a SentencePiece model. UserError naming
  // the file when it is missing, unreadable, or of a kind moin does not support.
  static Tokenizer load(const std::string& path);

  // "tokenizer.json" or "sentencepiece" by the file's first byte, without loading it ("" if unreadable).
  static std::string kind_of_file(const std::string& path);

  // The tokenizer file a model folder ships, or "" if none: tokenizer.model first, since the folders that
  // ship both (Llama-2, Mistral, TinyLlama) have a SentencePiece-style tokenizer.json moin does not read;
  // byte-level BPE models (Llama-3, Qwen2, SmolLM) ship only tokenizer.json.
  static std::string find_in_model_dir(const std::string& model_dir);
  // The names a model folder gives its tokenizer file (Hugging Face's).
  static constexpr const char* kSentencePieceFile = "tokenizer.model";
  static constexpr const char* kJsonFile = "tokenizer.json";

  std::vector<int> encode(std::string_view text, bool add_special = false) const {
    return impl_->encode(text, add_special);
  }
  std::string decode(const std::vector<int>& ids, bool skip_special = false) const {
    return impl_->decode(ids, skip_special);
  }
  std::string id_to_piece(int id) const { return impl_->id_to_piece(id); }

  // One more than the largest id (model vocabulary and added tokens).
  int vocab_size() const { return impl_->vocab_size; }
  int bos_id() const { return impl_->bos; }
  int eos_id() const { return impl_->eos; }
  int pad_id() const { return impl_->pad; }
  int unk_id() const { return impl_->unk; }
  const std::string& kind() const { return impl_->kind; }
  const std::string& path() const { return path_; }

 private:
  std::shared_ptr<const TokenizerBackend> impl_;
  std::string path_;
};

// The backends; Tokenizer::load picks one.
std::shared_ptr<const TokenizerBackend> load_sentencepiece(const std::string& model_path);
std::shared_ptr<const TokenizerBackend> load_tokenizer_json(const std::string& json_path);

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
