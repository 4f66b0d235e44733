// The Unicode data of the tokenizer.json byte-level BPE (regex classes, NFC), generated from Python's
// unicodedata by scripts/gen_bpe_unicode_tables.py into bpe_unicode_tables.cpp. Private to src/data.
#pragma once
#include <cstddef>
#include <cstdint>

namespace moin::bpe_unicode {

enum ClassFlags : std::uint8_t {
  kLetter = 1,  // \p{L}
  kNumber = 2,  // \p{N}
  kSpace = 4,   // \s as Oniguruma reads it: U+0009..U+000D, U+0085, Zs, Zl, Zp
  kNfc = 8,     // may change or combine under NFC (text without any is already NFC)
};

struct ClassRange {
  char32_t first, last;
  std::uint8_t value;  // flags, or a combining class
};

struct Mapping {
  char32_t cp;
  std::uint32_t offset;  // into kDecompositionPool
  std::uint32_t length;
};

struct Composition {
  char32_t first, second, composite;
};

extern const ClassRange kClassRanges[];  // sorted, disjoint; code points not covered have flags 0
extern const std::size_t kClassRangeCount;
extern const ClassRange kCombiningClass[];  // sorted, disjoint; non-zero classes only
extern const std::size_t kCombiningClassCount;
extern const char32_t kDecompositionPool[];
extern const Mapping kDecomposition[];  // sorted by cp; full canonical decomposition (no Hangul)
extern const std::size_t kDecompositionCount;
extern const Composition kComposition[];  // sorted by (first, second); primary composites (no Hangul)
extern const std::size_t kCompositionCount;

}  // namespace moin::bpe_unicode
