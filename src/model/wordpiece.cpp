// WordPiece tokenization (see include/moin/model/wordpiece.h for the steps and what they match).
#include "moin/model/wordpiece.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>

#include "model/unicode_tables.h"
#include "moin/core/error.h"
#include "moin/core/fs.h"

namespace moin {

namespace {

namespace U = unicode;

std::uint8_t char_flags(char32_t cp) {
  const U::ClassRange* end = U::kClassRanges + U::kClassRangeCount;
  // First range whose `last` >= cp.
  const U::ClassRange* it =
      std::lower_bound(U::kClassRanges, end, cp, [](const U::ClassRange& r, char32_t c) { return r.last < c; });
  return (it != end && it->first <= cp) ? it->flags : 0;
}

// The code points `cp` maps to in `table`, or nullptr (and n = 0) when it maps to itself.
const char32_t* lookup(const U::Mapping* table, std::size_t count, const char32_t* pool, char32_t cp,
                       std::size_t& n) {
  const U::Mapping* end = table + count;
  const U::Mapping* it = std::lower_bound(table, end, cp, [](const U::Mapping& m, char32_t c) { return m.cp < c; });
  if (it == end || it->cp != cp) {
    n = 0;
    return nullptr;
  }
  n = it->length;
  return pool + it->offset;
}

// BERT's "Chinese character" ranges: CJK Unified Ideographs and their extensions, compatibility ideographs.
bool is_cjk(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
         (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// Canonical decomposition of one code point (Hangul syllables algorithmically, as Unicode specifies).
void decompose(char32_t cp, std::u32string& out) {
  if (cp >= 0xAC00 && cp <= 0xD7A3) {
    char32_t s = cp - 0xAC00;
    out.push_back(0x1100 + s / (21 * 28));
    out.push_back(0x1161 + (s % (21 * 28)) / 28);
    if (s % 28) out.push_back(0x11A7 + s % 28);
    return;
  }
  std::size_t n;
  const char32_t* d = lookup(U::kDecomposition, U::kDecompositionCount, U::kDecompositionPool, cp, n);
  if (d) out.append(d, n);
  else out.push_back(cp);
}

void lower(char32_t cp, std::u32string& out) {
  std::size_t n;
  const char32_t* l = lookup(U::kLowercase, U::kLowercaseCount, U::kLowercasePool, cp, n);
  if (l) out.append(l, n);
  else out.push_back(cp);
}

std::string to_utf8(const std::u32string& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) utf8_append(out, c);
  return out;
}

}  // namespace

std::u32string utf8_decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  std::size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    char32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    bool ok = len > 0 && i + len <= n;
    for (int k = 1; ok && k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      ok = (cc >> 6) == 0x2;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are invalid too.
    if (ok && ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
               (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF))
      ok = false;
    if (ok) {
      out.push_back(cp);
      i += len;
    } else {
      out.push_back(0xFFFD);
      i += 1;
    }
  }
  return out;
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

namespace {

// Steps 1-4 as a stream: calls on_word(word) for each word in order until it returns false. Streaming
// lets encode() stop at max_length instead of normalising a 30 KB document it will truncate anyway.
void for_each_word(std::u32string_view text, const WordPieceOptions& o,
                   const std::function<bool(const std::u32string&)>& on_word) {
  std::u32string word, norm, tmp;
  bool go = true;
  auto flush = [&] {
    if (!word.empty() && go) go = on_word(word);
    word.clear();
  };
  for (char32_t cp : text) {
    if (!go) return;
    if (cp == 0 || cp == 0xFFFD) continue;
    std::uint8_t f = char_flags(cp);
    if (f & U::kWhitespace) {
      flush();
      continue;
    }
    if (f & U::kOther) continue;
    // Step 3 on this character: accents stripped before lower-casing, as the reference normaliser does.
    norm.clear();
    if (o.strip_accents) {
      tmp.clear();
      decompose(cp, tmp);
      for (char32_t d : tmp)
        if (!(char_flags(d) & U::kNonspacingMark)) norm.push_back(d);
    } else {
      norm.push_back(cp);
    }
    if (o.lower_case) {
      tmp.swap(norm);
      norm.clear();
      for (char32_t d : tmp) lower(d, norm);
    }
    bool alone = o.split_cjk && is_cjk(cp);
    for (char32_t d : norm) {
      if (alone || (char_flags(d) & U::kPunct)) {
        // A CJK ideograph (as a whole) or each punctuation character is a word of its own.
        flush();
        word.push_back(d);
        if (!alone) flush();
      } else {
        word.push_back(d);
      }
    }
    if (alone) flush();
  }
  flush();
}

}  // namespace

WordPiece::WordPiece(std::vector<std::string> vocab, WordPieceOptions opts)
    : vocab_(std::move(vocab)), opts_(opts) {
  index_.reserve(vocab_.size());
  for (std::size_t i = 0; i < vocab_.size(); ++i) index_.emplace(vocab_[i], static_cast<int>(i));
  cls_ = id("[CLS]");
  sep_ = id("[SEP]");
  unk_ = id("[UNK]");
  pad_ = id("[PAD]");
  if (cls_ < 0 || sep_ < 0 || unk_ < 0 || pad_ < 0)
    throw UserError("WordPiece vocabulary lacks one of [CLS], [SEP], [UNK], [PAD]");
  require(opts_.max_length >= 2, "WordPiece max_length must be at least 2 (room for [CLS] and [SEP])");
}

WordPiece WordPiece::load(const std::string& model_dir, int max_length) {
  namespace stdfs = std::filesystem;
  stdfs::path dir(model_dir);
  stdfs::path vocab_path = dir / "vocab.txt";
  std::ifstream in(vocab_path, std::ios::binary);
  if (!in) throw UserError(vocab_path.string() + ": missing (a BERT-family model folder has vocab.txt)");
  std::vector<std::string> vocab;
  std::string line;
  while (std::getline(in, line)) vocab.push_back(line);
  if (vocab.empty()) throw UserError(vocab_path.string() + ": empty vocabulary");

  WordPieceOptions o;
  int model_max = 512;
  stdfs::path tc = dir / "tokenizer_config.json";
  if (stdfs::exists(tc)) {
    auto j = fs::read_json(tc);
    if (j.contains("do_lower_case") && j["do_lower_case"].is_boolean()) o.lower_case = j["do_lower_case"].get<bool>();
    o.strip_accents = o.lower_case;
    if (j.contains("strip_accents") && j["strip_accents"].is_boolean())
      o.strip_accents = j["strip_accents"].get<bool>();
    if (j.contains("tokenize_chinese_chars") && j["tokenize_chinese_chars"].is_boolean())
      o.split_cjk = j["tokenize_chinese_chars"].get<bool>();
    // Some configs say 1e30 ("no limit"); the position table bounds it anyway.
    if (j.contains("model_max_length") && j["model_max_length"].is_number()) {
      double m = j["model_max_length"].get<double>();
      if (m >= 2 && m < 1e6) model_max = static_cast<int>(m);
    }
  }
  // tokenizer.json, when present, is what Hugging Face's fast tokenizer (and sentence-transformers) run.
  stdfs::path tj = dir / "tokenizer.json";
  if (stdfs::exists(tj)) {
    auto j = fs::read_json(tj);
    if (j.contains("normalizer") && j["normalizer"].is_object() && j["normalizer"].value("type", "") == "BertNormalizer") {
      const auto& n = j["normalizer"];
      if (n.contains("lowercase") && n["lowercase"].is_boolean()) o.lower_case = n["lowercase"].get<bool>();
      o.strip_accents = o.lower_case;
      if (n.contains("strip_accents") && n["strip_accents"].is_boolean())
        o.strip_accents = n["strip_accents"].get<bool>();
      if (n.contains("handle_chinese_chars") && n["handle_chinese_chars"].is_boolean())
        o.split_cjk = n["handle_chinese_chars"].get<bool>();
    }
    if (j.contains("model") && j["model"].is_object() && j["model"].contains("max_input_chars_per_word") &&
        j["model"]["max_input_chars_per_word"].is_number_integer())
      o.max_input_chars_per_word = j["model"]["max_input_chars_per_word"].get<int>();
  }
  o.max_length = max_length > 0 ? std::min(max_length, model_max) : model_max;
  try {
    return WordPiece(std::move(vocab), o);
  } catch (const UserError& e) {
    throw UserError(vocab_path.string() + ": " + e.what());
  }
}

int WordPiece::id(const std::string& token) const {
  auto it = index_.find(token);
  return it == index_.end() ? -1 : it->second;
}

std::vector<std::string> WordPiece::basic_tokenize(std::string_view text) const {
  std::vector<std::string> words;
  for_each_word(utf8_decode(text), opts_, [&](const std::u32string& w) {
    words.push_back(to_utf8(w));
    return true;
  });
  return words;
}

void WordPiece::wordpiece(const std::string& word, std::vector<int>& out) const {
  std::u32string chars = utf8_decode(word);
  if (static_cast<int>(chars.size()) > opts_.max_input_chars_per_word) {
    out.push_back(unk_);
    return;
  }
  std::size_t mark = out.size();
  std::size_t start = 0;
  std::string piece;
  while (start < chars.size()) {
    // Longest piece chars[start, end) in the vocabulary.
    int found = -1;
    std::size_t end = chars.size();
    for (; end > start; --end) {
      piece.assign(start > 0 ? "##" : "");
      for (std::size_t k = start; k < end; ++k) utf8_append(piece, chars[k]);
      found = id(piece);
      if (found >= 0) break;
    }
    if (found < 0) {
      out.resize(mark);
      out.push_back(unk_);
      return;
    }
    out.push_back(found);
    start = end;
  }
}

std::vector<int> WordPiece::encode(std::string_view text) const {
  const std::size_t budget = static_cast<std::size_t>(opts_.max_length) - 2;
  std::vector<int> ids{cls_};
  std::string utf8;
  for_each_word(utf8_decode(text), opts_, [&](const std::u32string& w) {
    utf8 = to_utf8(w);
    wordpiece(utf8, ids);
    return ids.size() - 1 < budget;
  });
  if (ids.size() - 1 > budget) ids.resize(budget + 1);
  ids.push_back(sep_);
  return ids;
}

}  // namespace moin
