#include "data/bpe_text.h"

#include <algorithm>
#include <mutex>
#include <vector>

#include "data/bpe_unicode_tables.h"

namespace moin::bpe {

namespace {

// One byte of flags per code point: 1.1 MB built once, so a class is one load on the hot path.
const std::uint8_t* class_table() {
  static std::vector<std::uint8_t> table;
  static std::once_flag once;
  std::call_once(once, [] {
    table.assign(0x110000, 0);
    for (std::size_t i = 0; i < bpe_unicode::kClassRangeCount; ++i) {
      const auto& r = bpe_unicode::kClassRanges[i];
      std::fill(table.begin() + r.first, table.begin() + r.last + 1, r.value);
    }
  });
  return table.data();
}

int combining_class(char32_t cp) {
  const auto* b = bpe_unicode::kCombiningClass;
  const auto* e = b + bpe_unicode::kCombiningClassCount;
  auto it = std::upper_bound(b, e, cp, [](char32_t c, const bpe_unicode::ClassRange& r) { return c < r.first; });
  if (it == b) return 0;
  --it;
  return cp <= it->last ? it->value : 0;
}

// Hangul syllables are composed and decomposed arithmetically (Unicode 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr int kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

void decompose(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    int s = static_cast<int>(cp - kSBase);
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  const auto* b = bpe_unicode::kDecomposition;
  const auto* e = b + bpe_unicode::kDecompositionCount;
  auto it = std::lower_bound(b, e, cp, [](const bpe_unicode::Mapping& m, char32_t c) { return m.cp < c; });
  if (it != e && it->cp == cp) {
    out.insert(out.end(), bpe_unicode::kDecompositionPool + it->offset,
               bpe_unicode::kDecompositionPool + it->offset + it->length);
  } else {
    out.push_back(cp);
  }
}

// The primary composite of (a, b), or 0.
char32_t compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto* first = bpe_unicode::kComposition;
  const auto* last = first + bpe_unicode::kCompositionCount;
  auto it = std::lower_bound(first, last, std::make_pair(a, b), [](const bpe_unicode::Composition& c, auto key) {
    return c.first != key.first ? c.first < key.first : c.second < key.second;
  });
  return (it != last && it->first == a && it->second == b) ? it->composite : 0;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// A byte of invalid UTF-8 travels through NFC as this marker, so it comes out unchanged.
constexpr char32_t kRawByte = 0x80000000;

}  // namespace

char32_t decode_utf8(std::string_view s, std::size_t pos, int* len) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + pos;
  const std::size_t left = s.size() - pos;
  const unsigned c = p[0];
  *len = 1;
  if (c < 0x80) return c;
  int n;
  char32_t cp, min;
  if ((c & 0xE0) == 0xC0) {
    n = 2, cp = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, cp = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, cp = c & 0x07, min = 0x10000;
  } else {
    return kInvalid;
  }
  if (left < static_cast<std::size_t>(n)) return kInvalid;
  for (int i = 1; i < n; ++i) {
    if ((p[i] & 0xC0) != 0x80) return kInvalid;
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return kInvalid;
  *len = n;
  return cp;
}

std::uint8_t char_class(char32_t cp) {
  static const std::uint8_t* table = class_table();
  return cp < 0x110000 ? table[cp] : 0;
}

bool is_nfc_quick(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    int len;
    char32_t cp = decode_utf8(s, i, &len);
    if (char_class(cp) & kNfc) return false;
    i += static_cast<std::size_t>(len);
  }
  return true;
}

std::string nfc(std::string_view s) {
  if (is_nfc_quick(s)) return std::string(s);
  // Canonical decomposition, canonical ordering of combining marks, then canonical composition (UAX #15).
  std::vector<char32_t> d;
  d.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    int len;
    char32_t cp = decode_utf8(s, i, &len);
    if (cp == kInvalid)
      d.push_back(kRawByte | static_cast<unsigned char>(s[i]));
    else
      decompose(cp, d);
    i += static_cast<std::size_t>(len);
  }
  auto ccc = [](char32_t cp) { return (cp & kRawByte) ? 0 : combining_class(cp); };
  for (std::size_t i = 1; i < d.size(); ++i) {  // insertion sort: stable, runs are short
    int c = ccc(d[i]);
    if (c == 0) continue;
    for (std::size_t j = i; j > 0 && ccc(d[j - 1]) > c; --j) std::swap(d[j], d[j - 1]);
  }
  std::vector<char32_t> out;
  out.reserve(d.size());
  std::size_t starter = 0;
  int last_class = -1;  // -1: no starter yet
  for (char32_t cp : d) {
    int c = ccc(cp);
    if (last_class >= 0 && !(cp & kRawByte) && !(out[starter] & kRawByte) &&
        (last_class == 0 ? out.size() == starter + 1 : last_class < c)) {
      if (char32_t comp = compose(out[starter], cp)) {
        out[starter] = comp;
        continue;
      }
    }
    if (c == 0) {
      starter = out.size();
      last_class = 0;
    } else if (last_class >= 0) {
      last_class = c;
    }
    out.push_back(cp);
  }
  std::string r;
  r.reserve(s.size());
  for (char32_t cp : out) {
    if (cp & kRawByte)
      r += static_cast<char>(cp & 0xFF);
    else
      append_utf8(r, cp);
  }
  return r;
}

// ---- split patterns

const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
namespace {
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Code point at pos with its class; pos == size reads as class 0 and length 0.
struct Cursor {
  std::string_view s;
  char32_t cp(std::size_t pos, int* len) const {
    if (pos >= s.size()) {
      *len = 0;
      return kInvalid;
    }
    return decode_utf8(s, pos, len);
  }
  std::uint8_t cls(std::size_t pos, int* len) const {
    if (pos >= s.size()) {
      *len = 0;
      return 0;
    }
    auto c = static_cast<unsigned char>(s[pos]);
    if (c < 0x80) {  // ASCII without the table
      *len = 1;
      if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return kLetter;
      if (c >= '0' && c <= '9') return kNumber;
      if (c == ' ' || (c >= 9 && c <= 13)) return kSpace;
      return 0;
    }
    return char_class(decode_utf8(s, pos, len));
  }
  // End of the run of code points whose class has any of `mask` (want = true) or none (want = false).
  std::size_t run(std::size_t pos, std::uint8_t mask, bool want, std::size_t max_count = SIZE_MAX) const {
    int len;
    for (std::size_t n = 0; n < max_count && pos < s.size(); ++n) {
      bool has = (cls(pos, &len) & mask) != 0;
      if (has != want) break;
      pos += static_cast<std::size_t>(len);
    }
    return pos;
  }
};

constexpr std::uint8_t kLN = kLetter | kNumber;
constexpr std::uint8_t kSLN = kSpace | kLetter | kNumber;

// 's 't 're 've 'm 'll 'd after the apostrophe at pos: the end of the match, or 0.
std::size_t contraction(std::string_view s, std::size_t pos, bool any_case) {
  auto at = [&](std::size_t i) -> char {
    if (i >= s.size()) return 0;
    char c = s[i];
    return any_case && c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c;
  };
  char a = at(pos + 1), b = at(pos + 2);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return pos + 2;
  // Oniguruma's (?i) folds U+017F LATIN SMALL LETTER LONG S to s
  if (any_case && a == '\xC5' && b == '\xBF') return pos + 3;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return pos + 3;
  return 0;
}

// \s+(?!\S) then \s+, from pos (a space): the whole run at the end of the text or before a space, else the
// run without its last space (which then leads the next piece), else the single space.
std::size_t space_run(const Cursor& c, std::size_t pos) {
  std::size_t end = c.run(pos, kSpace, true);
  if (end == c.s.size()) return end;
  std::size_t last = end - 1;  // start of the last space code point
  while (last > pos && (static_cast<unsigned char>(c.s[last]) & 0xC0) == 0x80) --last;
  return last > pos ? last : end;
}

std::size_t match_gpt2(std::string_view s, std::size_t pos) {
  Cursor c{s};
  if (s[pos] == '\'')
    if (std::size_t e = contraction(s, pos, false)) return e;
  std::size_t j = s[pos] == ' ' ? pos + 1 : pos;  // ` ?` before the letter, number and other runs
  int len;
  std::uint8_t k = c.cls(j, &len);
  if (j < s.size()) {
    if (k & kLetter) return c.run(j, kLetter, true);
    if (k & kNumber) return c.run(j, kNumber, true);
    if (!(k & kSpace)) return c.run(j, kSLN, false);
  }
  return space_run(c, pos);  // s[pos] is a space here: a lone ' ' before a space, or any other space
}

std::size_t match_llama3(std::string_view s, std::size_t pos, std::size_t max_digits) {
  Cursor c{s};
  if (s[pos] == '\'')
    if (std::size_t e = contraction(s, pos, true)) return e;
  int len;
  std::uint8_t k = c.cls(pos, &len);
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (k & kLetter) return c.run(pos, kLetter, true);
  const char ch = s[pos];
  if (!(k & kNumber) && ch != '\r' && ch != '\n') {
    int len2;
    if (c.cls(pos + static_cast<std::size_t>(len), &len2) & kLetter)
      return c.run(pos + static_cast<std::size_t>(len), kLetter, true);
  }
  // \p{N}{1,3}
  if (k & kNumber) return c.run(pos, kNumber, true, max_digits);
  // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
  std::size_t j = ch == ' ' ? pos + 1 : pos;
  int lenj;
  if (j < s.size() && !(c.cls(j, &lenj) & kSLN)) {
    std::size_t e = c.run(j, kSLN, false);
    while (e < s.size() && (s[e] == '\r' || s[e] == '\n')) ++e;
    return e;
  }
  // \s*[\r\n]+ : the space run up to and including its last \r or \n
  std::size_t end = c.run(pos, kSpace, true);
  for (std::size_t i = end; i > pos; --i)
    if (s[i - 1] == '\r' || s[i - 1] == '\n') return i;
  return space_run(c, pos);
}

}  // namespace

bool find_split_pattern(std::string_view regex, SplitPattern* out) {
  if (regex == kGpt2Pattern) {
    *out = SplitPattern::kGpt2;
  } else if (regex == kLlama3Pattern) {
    *out = SplitPattern::kLlama3;
  } else if (regex == kQwen2Pattern) {
    *out = SplitPattern::kQwen2;
  } else {
    return false;
  }
  return true;
}

std::size_t match_split(SplitPattern p, std::string_view s, std::size_t pos) {
  switch (p) {
    case SplitPattern::kGpt2:
      return match_gpt2(s, pos);
    case SplitPattern::kLlama3:
      return match_llama3(s, pos, 3);
    case SplitPattern::kQwen2:
      return match_llama3(s, pos, 1);
  }
  return s.size();
}

}  // namespace moin::bpe
