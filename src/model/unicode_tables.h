// The Unicode data of the WordPiece (BERT) tokenizer, generated from Python's unicodedata by
// scripts/gen_unicode_tables.py into unicode_tables.cpp. Private to src/model.
#pragma once
#include <cstddef>
#include <cstdint>

#include "data/bpe_unicode_tables.h"

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
using bpe_unicode::Mapping;

extern const ClassRange kClassRanges[];  // sorted, disjoint; code points not covered have flags 0
extern const std::size_t kClassRangeCount;
// Full canonical decomposition (sorted by cp, no Hangul): the same in Unicode 14 and 15.1, so one table
// serves this tokenizer and the byte-level BPE one (data/bpe_unicode_tables.h).
using bpe_unicode::kDecompositionPool;
using bpe_unicode::kDecomposition;
using bpe_unicode::kDecompositionCount;
extern const char32_t kLowercasePool[];
extern const Mapping kLowercase[];  // sorted by cp; full lower-case mapping
extern const std::size_t kLowercaseCount;

}  // namespace moin::unicode
