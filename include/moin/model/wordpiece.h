// WordPiece: the tokenizer of BERT-family encoders, matching Hugging Face's BertTokenizer (the
// `tokenizers` BertNormalizer + BertPreTokenizer + WordPiece pipeline that sentence-transformers uses).
//
//   1. clean: drop NUL, U+FFFD and category C* (control, format, ...) except \t \n \r; whitespace -> ' '
//   2. put spaces around CJK ideographs, so each is a word of its own
//   3. when lower-casing: NFD, drop non-spacing marks (accents), then lower-case (full mapping)
//   4. split on whitespace, then split every punctuation character (ASCII ranges + Unicode P*) off
//   5. each word: greedy longest-match-first against the vocabulary, continuations prefixed with "##";
//      a word longer than max_input_chars_per_word, or one that cannot be covered, becomes [UNK]
//   6. [CLS] ids [SEP], truncated so the whole sequence fits max_length
//
// Unicode data comes from tables generated from Python's unicodedata (scripts/gen_unicode_tables.py).
// Not reproduced: the slow Python tokenizer's NFC pass when not lower-casing and its context-dependent
// final sigma (the fast tokenizer maps each character on its own, as here), and canonical reordering of
// combining marks in step 3 (only marks that survive accent stripping could be affected).
// Thread-safe: encode() only reads.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace moin {

struct WordPieceOptions {
  bool lower_case = true;        // do_lower_case
  bool strip_accents = true;     // tokenizer_config's strip_accents (null -> follows lower_case)
  bool split_cjk = true;         // tokenize_chinese_chars
  int max_input_chars_per_word = 100;
  int max_length = 512;          // longest sequence including [CLS] and [SEP]
};

class WordPiece {
 public:
  // Reads vocab.txt (one token per line, id = line number) from a model folder and the casing rules
  // from tokenizer_config.json when present. UserError naming the file when vocab.txt is missing or
  // lacks [CLS], [SEP], [UNK] or [PAD].
  static WordPiece load(const std::string& model_dir, int max_length = 0);
  WordPiece(std::vector<std::string> vocab, WordPieceOptions opts);

  // Steps 1-4: the words (UTF-8) that WordPiece sees.
  std::vector<std::string> basic_tokenize(std::string_view text) const;
  // Step 5 on one word.
  void wordpiece(const std::string& word, std::vector<int>& out) const;
  // Steps 1-6: [CLS] ... [SEP], at most options().max_length ids.
  std::vector<int> encode(std::string_view text) const;

  int vocab_size() const { return static_cast<int>(vocab_.size()); }
  int id(const std::string& token) const;  // -1 when absent
  const std::string& token(int id) const { return vocab_.at(id); }
  int cls_id() const { return cls_; }
  int sep_id() const { return sep_; }
  int unk_id() const { return unk_; }
  int pad_id() const { return pad_; }
  const WordPieceOptions& options() const { return opts_; }

 private:
  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int> index_;
  WordPieceOptions opts_;
  int cls_ = -1, sep_ = -1, unk_ = -1, pad_ = -1;
};

// UTF-8 helpers, shared with the tests. Invalid bytes decode to U+FFFD.
std::u32string utf8_decode(std::string_view s);
void utf8_append(std::string& out, char32_t cp);

}  // namespace moin
