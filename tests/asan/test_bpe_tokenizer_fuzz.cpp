// The tokenizer.json byte-level BPE under AddressSanitizer + UBSan: random bytes (mostly invalid UTF-8) and
// random Unicode text through every split pattern, NFC and the heap merge must encode without a report,
// and decode back to the same bytes (byte-level BPE loses nothing). Mutated tokenizer.json files must load
// or be refused with a UserError. MOIN_FUZZ_CASES=N runs more cases (default 3000).
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include <nlohmann/json.hpp>

#include "data/bpe_text.h"
#include "moin/core/error.h"
#include "moin/data/tokenizer.h"
#include "test_util.h"

namespace {

using json = nlohmann::json;

int fuzz_cases() {
  const char* env = std::getenv("MOIN_FUZZ_CASES");
  return env ? std::atoi(env) : 3000;
}

// GPT-2's byte-to-unicode character of byte b, as UTF-8.
std::string byte_char(int b) {
  bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  int n = 0;
  if (!printable)
    for (int i = 0; i < b; ++i)
      if (!((i >= '!' && i <= '~') || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF))) ++n;
  int cp = printable ? b : 256 + n;
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// All 256 bytes and a chain of merges over a few characters, with a split regex of the given kind.
json tokenizer_json(const std::string& split_regex, bool nfc) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  json merges = json::array();
  int id = 256;
  std::vector<std::string> toks = {"a", "b", "\xC4\xA0", "1"};  // a, b, Ġ (space), 1
  for (int i = 0; i < 40; ++i) {
    std::string x = toks[static_cast<std::size_t>(i * 7) % toks.size()], y = toks[static_cast<std::size_t>(i * 3 + 1) % toks.size()];
    if (vocab.contains(x + y)) continue;
    vocab[x + y] = id++;
    merges.push_back(json::array({x, y}));
    toks.push_back(x + y);
  }
  json j;
  j["added_tokens"] = json::array({{{"id", id}, {"content", "<|s|>"}, {"special", true}, {"normalized", false},
                                    {"lstrip", true}, {"rstrip", true}, {"single_word", false}}});
  j["normalizer"] = nfc ? json{{"type", "NFC"}} : json();
  json bl = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", split_regex.empty()}};
  j["pre_tokenizer"] = split_regex.empty()
                           ? bl
                           : json{{"type", "Sequence"},
                                  {"pretokenizers",
                                   json::array({{{"type", "Split"}, {"pattern", {{"Regex", split_regex}}},
                                                 {"behavior", "Isolated"}, {"invert", false}},
                                                bl})}};
  j["decoder"] = {{"type", "ByteLevel"}};
  j["post_processor"] = nullptr;
  j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"ignore_merges", !split_regex.empty()}};
  return j;
}

std::string random_text(std::mt19937& rng) {
  static const char* pieces[] = {"a", "b", " ", "  ", "\n", "\r\n", "\t", "1", "123456", "'s", "'LL", "<|s|>",
                                 "\xC3\xA9", "e\xCC\x81", "\xE4\xB8\xAD", "\xF0\x9F\x99\x82", "\xE2\x80\xA8",
                                 "\xC2\x85", "\xEF\xA4\x80", "\xE1\x84\x80\xE1\x85\xA1", "!?", "ab1 b"};
  std::string s;
  int n = static_cast<int>(rng() % 200);
  for (int i = 0; i < n; ++i) {
    if (rng() % 5 == 0)
      s += static_cast<char>(rng() % 256);  // any byte: invalid UTF-8 too
    else
      s += pieces[rng() % (sizeof pieces / sizeof *pieces)];
  }
  return s;
}

TEST(BpeTokenizerFuzz, RandomTextEncodesAndDecodesToTheSameBytes) {
  moin::test::TempDir dir;
  const std::string gpt2 = moin::bpe::kGpt2Pattern;
  const std::string llama3 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  int k = 0;
  for (const auto& [regex, nfc] : {std::pair<std::string, bool>{"", false}, {gpt2, false}, {llama3, false}, {llama3, true}}) {
    std::string path = dir / ("t" + std::to_string(k++) + ".json");
    moin::test::write_file(path, tokenizer_json(regex, nfc).dump());
    auto tok = moin::load_tokenizer_json(path);
    std::mt19937 rng(11 + k);
    for (int c = 0; c < fuzz_cases() / 4; ++c) {
      std::string text = random_text(rng);
      auto ids = tok->encode(text, true);
      for (int id : ids) ASSERT_TRUE(id >= 0 && id < tok->vocab_size);
      if (nfc || text.find("<|s|>") != std::string::npos) continue;  // NFC and lstrip/rstrip change the text
      ASSERT_EQ(tok->decode(ids, false), text) << "regex " << regex << " case " << c;
    }
    std::string longest(100000, 'a');  // one piece far over the cache and the short-merge limit
    EXPECT_EQ(tok->decode(tok->encode(longest, false), false), longest);
  }
}

TEST(BpeTokenizerFuzz, MutatedFilesLoadOrAreRefused) {
  moin::test::TempDir dir;
  const std::string good = tokenizer_json("", false).dump();
  std::mt19937 rng(5);
  for (int c = 0; c < fuzz_cases() / 10; ++c) {
    std::string s = good;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      std::size_t at = rng() % s.size();
      switch (rng() % 3) {
        case 0: s[at] = static_cast<char>(rng() % 128); break;
        case 1: s.erase(at, 1 + rng() % 20); break;
        default: s.insert(at, 1, "{}[]\",:0-9 "[rng() % 11]);
      }
    }
    std::string path = dir / "m.json";
    moin::test::write_file(path, s);
    try {
      auto tok = moin::load_tokenizer_json(path);
      tok->decode(tok->encode("ab 12 ab\n", true), false);
    } catch (const moin::UserError&) {
    }
  }
}

}  // namespace
