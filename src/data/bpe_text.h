// Text handling of the tokenizer.json byte-level BPE: UTF-8 code points and their regex classes, NFC, and
// the pre-tokenizer splits of the patterns GPT-2, Llama-3 and Qwen2 ship. Private to src/data.
//
// The splits are hand-written matchers, one per pattern, that return what Oniguruma (the regex engine of
// Hugging Face tokenizers) returns: the alternatives are tried in order, each greedy with backtracking.
// A hand-written matcher is several times faster than a regex engine, and these few patterns are what
// the models people use ship; another pattern is refused by name (bpe::find_split_pattern).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace moin::bpe {

enum CharClass : std::uint8_t { kLetter = 1, kNumber = 2, kSpace = 4, kNfc = 8 };

// Decodes the code point at s[pos]; sets *len to its byte length. A byte that does not start a valid
// UTF-8 sequence decodes alone to kInvalid (class 0: neither letter, number nor space).
constexpr char32_t kInvalid = 0xFFFFFFFF;
char32_t decode_utf8(std::string_view s, std::size_t pos, int* len);

// CharClass flags of a code point (0 for kInvalid).
std::uint8_t char_class(char32_t cp);

// Canonical composition (NFC) of valid UTF-8 text; bytes that are not valid UTF-8 pass through.
bool is_nfc_quick(std::string_view s);  // true when the text certainly is NFC already
std::string nfc(std::string_view s);

// The pre-tokenizer split patterns moin implements.
enum class SplitPattern {
  kGpt2,    // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+  (ByteLevel's own)
  kLlama3,  // (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  kQwen2,   // the same with \p{N} (one digit per piece)
};
extern const char* const kGpt2Pattern;
// The pattern of a tokenizer.json Split regex; false when moin has no matcher for it.
bool find_split_pattern(std::string_view regex, SplitPattern* out);

// End of the pattern's match that starts at pos (pos < s.size()); the patterns match every position.
std::size_t match_split(SplitPattern p, std::string_view s, std::size_t pos);

}  // namespace moin::bpe
