// The Unicode data of the WordPiece (BERT) tokenizer, generated from Python's unicodedata by
// scripts/gen_unicode_tables.py into unicode_tables.cpp. Private to src/model.
#pragma once
#include <cstddef>
#include <cstdint>

namespace moin::unicode {

enum ClassFlags : std::uint8_t {
  kOther = 1,           // general category C* (control, format, unassigned, private use, surrogate)
  kWhitespace = 2,      // Zs, \t \n \r, U+2028, U+2029
  kPunct = 4,           // P* or ASCII punctuation (BERT counts $, +, ^, ` ... as punctuation)
  kNonspacingMark = 8,  // Mn: what accent stripping drops after NFD
};

struct ClassRange {
  char32_t first, last;
  std::uint8_t flags;
};

// A code point mapped to `length` code points starting at `offset` of the table's pool.
struct Mapping {
  char32_t cp;
  std::uint32_t offset;
  std::uint32_t length;
};

extern const ClassRange kClassRanges[];  // sorted, disjoint; code points not covered have flags 0
extern const std::size_t kClassRangeCount;
extern const char32_t kDecompositionPool[];
extern const Mapping kDecomposition[];  // sorted by cp; full canonical decomposition (no Hangul)
extern const std::size_t kDecompositionCount;
extern const char32_t kLowercasePool[];
extern const Mapping kLowercase[];  // sorted by cp; full lower-case mapping
extern const std::size_t kLowercaseCount;

}  // namespace moin::unicode
