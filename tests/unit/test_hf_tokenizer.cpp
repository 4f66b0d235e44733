// Hugging Face tokenizer.json byte-level BPE: a hand-made file with ids worked out by hand, NFC against
// Unicode's own examples, and the refusal of every kind moin does not read. tests/python/
// test_bpe_tokenizer_ref.py compares ids with the `tokenizers` package on trained files and real text.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <thread>

#include "data/bpe_text.h"
#include "moin/data/tokenizer.h"
#include "test_util.h"

namespace {

using json = nlohmann::json;
using moin::test::TempDir;
using moin::test::user_error_of;

// GPT-2's byte-to-unicode map, written out independently of the library's.
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

// Byte b has id b; merges "h e" -> 256, "l l" -> 257, "he ll" -> 258, "Ġ w" -> 259; <|bos|> 260 is special
// and the template puts it first.
json tiny_tokenizer_json() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  vocab["he"] = 256;
  vocab["ll"] = 257;
  vocab["hell"] = 258;
  vocab["\xC4\xA0w"] = 259;  // "Ġw"
  json j;
  j["version"] = "1.0";
  j["added_tokens"] = json::array({{{"id", 260}, {"content", "<|bos|>"}, {"single_word", false}, {"lstrip", false},
                                    {"rstrip", false}, {"normalized", false}, {"special", true}}});
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  json single = json::array();
  single.push_back({{"SpecialToken", {{"id", "<|bos|>"}, {"type_id", 0}}}});
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  json specials;
  specials["<|bos|>"] = {{"id", "<|bos|>"}, {"ids", {260}}, {"tokens", {"<|bos|>"}}};
  j["post_processor"] = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", json::array()},
                         {"special_tokens", specials}};
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  json merges = json::array();
  for (auto [a, b] : {std::pair<const char*, const char*>{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"\xC4\xA0", "w"}})
    merges.push_back(json::array({a, b}));
  j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                {"ignore_merges", false}, {"vocab", vocab}, {"merges", merges}};
  return j;
}

std::string write_json(const TempDir& dir, const json& j, const std::string& name = "tokenizer.json") {
  std::string path = dir / name;
  moin::test::write_file(path, j.dump());
  return path;
}

TEST(HfTokenizer, HandMadeFileGivesHandWorkedIds) {
  TempDir dir;
  auto tok = moin::Tokenizer::load(write_json(dir, tiny_tokenizer_json()));
  EXPECT_EQ(tok.kind(), "tokenizer.json");
  EXPECT_EQ(tok.vocab_size(), 261);
  EXPECT_EQ(tok.bos_id(), 260);  // from the template
  EXPECT_EQ(tok.unk_id(), -1);
  EXPECT_EQ(tok.encode("hello"), (std::vector<int>{258, 'o'}));
  // " world": the GPT-2 split keeps the space with the word, then "Ġ w" merges.
  EXPECT_EQ(tok.encode("hello world"), (std::vector<int>{258, 'o', 259, 'o', 'r', 'l', 'd'}));
  EXPECT_EQ(tok.encode("hello", true), (std::vector<int>{260, 258, 'o'}));
  EXPECT_EQ(tok.encode("a<|bos|>b"), (std::vector<int>{'a', 260, 'b'}));  // added tokens split first
  EXPECT_EQ(tok.encode(""), std::vector<int>{});
  EXPECT_EQ(tok.encode("\n"), std::vector<int>{'\n'});  // byte 10 has id 10
  EXPECT_EQ(tok.decode({260, 258, 'o', 259}), "<|bos|>hello w");
  EXPECT_EQ(tok.decode({260, 258, 'o', 259}, true), "hello w");
  EXPECT_EQ(tok.id_to_piece(259), "\xC4\xA0w");
  const std::string text = "héllo wörld 🙂 東京\n\n  x";
  EXPECT_EQ(tok.decode(tok.encode(text)), text);
}

TEST(HfTokenizer, LongPiecesUseTheHeapAndAgreeWithShortOnes) {
  // "hellhellhell...": a piece longer than 64 bytes goes through the heap merge; both give "hell" tokens.
  TempDir dir;
  auto tok = moin::Tokenizer::load(write_json(dir, tiny_tokenizer_json()));
  std::string word;
  for (int i = 0; i < 40; ++i) word += "hell";
  EXPECT_EQ(tok.encode(word), std::vector<int>(40, 258));
  EXPECT_EQ(tok.encode("hellhell"), std::vector<int>(2, 258));
}

TEST(HfTokenizer, ThreadsSharingOneTokenizerGetTheSameIds) {
  // Each thread has its own piece cache; two tokenizers alternating on one thread must not mix them.
  TempDir dir;
  auto tok = moin::Tokenizer::load(write_json(dir, tiny_tokenizer_json()));
  auto j = tiny_tokenizer_json();
  j["model"]["merges"] = json::array();
  auto plain = moin::Tokenizer::load(write_json(dir, j, "plain.json"));
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) texts.push_back("hello world " + std::to_string(i) + std::string(i % 7, ' ') + "hell");
  std::vector<std::vector<int>> want;
  for (const auto& t : texts) want.push_back(tok.encode(t));
  std::vector<std::thread> pool;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t)
    pool.emplace_back([&] {
      for (int rep = 0; rep < 5; ++rep)
        for (std::size_t i = 0; i < texts.size(); ++i) {
          if (tok.encode(texts[i]) != want[i]) ++wrong;
          if (plain.encode(texts[i]).size() != texts[i].size()) ++wrong;  // no merges: one id per byte
        }
    });
  for (auto& th : pool) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(HfTokenizer, SpecialIdsFromTokenizerConfig) {
  TempDir dir;
  auto j = tiny_tokenizer_json();
  j["post_processor"] = nullptr;
  std::string path = write_json(dir, j);
  moin::test::write_file(dir / "tokenizer_config.json",
                         R"({"bos_token": null, "eos_token": {"content": "<|bos|>"}, "pad_token": "!"})");
  auto tok = moin::Tokenizer::load(path);
  EXPECT_EQ(tok.bos_id(), -1);  // null: the model has no BOS (Qwen2)
  EXPECT_EQ(tok.eos_id(), 260);
  EXPECT_EQ(tok.pad_id(), '!');
  EXPECT_EQ(tok.encode("hello", true), (std::vector<int>{258, 'o'}));
}

TEST(HfTokenizer, FindsTheTokenizerOfAModelFolder) {
  TempDir dir;
  EXPECT_EQ(moin::Tokenizer::find_in_model_dir(dir.path.string()), "");
  write_json(dir, tiny_tokenizer_json());
  EXPECT_EQ(moin::Tokenizer::find_in_model_dir(dir.path.string()), dir / "tokenizer.json");
  moin::test::write_file(dir / "tokenizer.model", "x");  // both (Llama-2, Mistral): the SentencePiece model
  EXPECT_EQ(moin::Tokenizer::find_in_model_dir(dir.path.string()), dir / "tokenizer.model");
  EXPECT_EQ(moin::Tokenizer::kind_of_file(dir / "tokenizer.json"), "tokenizer.json");
  EXPECT_EQ(moin::Tokenizer::kind_of_file(dir / "tokenizer.model"), "sentencepiece");
}

TEST(HfTokenizer, UnsupportedKindsAreRefusedByName) {
  TempDir dir;
  auto refused = [&](json j) { return user_error_of([&] { moin::Tokenizer::load(write_json(dir, j)); }); };
  auto j = tiny_tokenizer_json();
  for (const char* type : {"WordPiece", "Unigram", "WordLevel"}) {
    auto k = j;
    k["model"] = {{"type", type}, {"vocab", json::object()}};
    EXPECT_NE(refused(k).find(std::string("model type ") + type + " is not supported"), std::string::npos) << type;
  }
  auto k = j;
  k.erase("model");
  EXPECT_NE(refused(k).find("no \"model\" section"), std::string::npos);
  k = j;
  k["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}, {"behavior", "Isolated"}, {"invert", false}};
  EXPECT_NE(refused(k).find("Split regex \\w+ is not one moin implements"), std::string::npos);
  k = j;
  k["pre_tokenizer"] = {{"type", "Whitespace"}};
  EXPECT_NE(refused(k).find("pre-tokenizer Whitespace is not supported"), std::string::npos);
  k = j;
  k["pre_tokenizer"] = nullptr;
  EXPECT_NE(refused(k).find("no ByteLevel step"), std::string::npos);
  k = j;
  k["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_NE(refused(k).find("normalizer Lowercase is not supported"), std::string::npos);
  k = j;
  k["decoder"] = {{"type", "WordPiece"}};
  EXPECT_NE(refused(k).find("decoder WordPiece is not supported"), std::string::npos);
  k = j;
  k["model"]["merges"].push_back(json::array({"x", "yz"}));
  EXPECT_NE(refused(k).find("merge \"x yz\" names a token outside the vocabulary"), std::string::npos);
  k = j;
  k["model"]["continuing_subword_prefix"] = "##";
  EXPECT_NE(refused(k).find("continuing_subword_prefix"), std::string::npos);
  moin::test::write_file(dir / "broken.json", "{\"model\": ");
  EXPECT_NE(user_error_of([&] { moin::Tokenizer::load(dir / "broken.json"); }).find("invalid JSON at line 1"),
            std::string::npos);
}

TEST(HfTokenizer, CliRefusesAnUnsupportedFileInOneLineWithExitTwo) {
  TempDir dir;
  auto j = tiny_tokenizer_json();
  j["model"] = {{"type", "Unigram"}, {"vocab", json::array()}};
  std::string path = write_json(dir, j);
  auto r = moin::test::run_moin("tokenizer encode --model " + path + " --text hi");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(r.output.rfind("moin: error: tokenizer: " + path + ": model type Unigram is not supported", 0), 0u)
      << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

TEST(HfTokenizer, CliEncodesAndDecodesJsonl) {
  TempDir dir;
  std::string path = write_json(dir, tiny_tokenizer_json());
  moin::test::write_file(dir / "in.jsonl", "{\"text\": \"hello\\nworld\"}\n{\"text\": \"\"}\n");
  auto r = moin::test::run_moin("tokenizer encode -q --jsonl --bos --model " + path, dir / "in.jsonl");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "[260,258,111,10,119,111,114,108,100]\n[260]\n");
  moin::test::write_file(dir / "ids.jsonl", "[260,258,111,10,119]\n");
  r = moin::test::run_moin("tokenizer decode -q --jsonl --skip-special --model " + path, dir / "ids.jsonl");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "\"hello\\nw\"\n");
}

// Expected values from Unicode's normalization examples (UAX #15) and Python's unicodedata.
TEST(HfTokenizer, NfcComposesReordersAndLeavesNfcAlone) {
  using moin::bpe::nfc;
  EXPECT_EQ(nfc("e\xCC\x81"), "\xC3\xA9");                      // e + U+0301 -> é
  EXPECT_EQ(nfc("\xE2\x84\xAB"), "\xC3\x85");                   // U+212B ANGSTROM SIGN -> U+00C5
  EXPECT_EQ(nfc("a\xCC\x82\xCC\xA3"), "\xE1\xBA\xAD");          // a + U+0302 + U+0323 -> U+1EAD (reordered)
  EXPECT_EQ(nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // jamo L V T -> U+AC01
  EXPECT_EQ(nfc("\xEF\xA4\x80"), "\xE8\xB1\x88");               // U+F900 -> U+8C48 (singleton)
  EXPECT_EQ(nfc("\xE0\xA4\xA8\xE0\xA4\xBC"), "\xE0\xA4\xA9");  // U+0928 + U+093C -> U+0929
  EXPECT_EQ(nfc("\xE0\xA4\x95\xE0\xA4\xBC"), "\xE0\xA4\x95\xE0\xA4\xBC");  // U+0958 is excluded: no compose
  EXPECT_EQ(nfc("plain ascii"), "plain ascii");
  EXPECT_EQ(nfc("caf\xC3\xA9 \xFF"), "caf\xC3\xA9 \xFF");       // invalid UTF-8 passes through
  EXPECT_TRUE(moin::bpe::is_nfc_quick("caf\xC3\xA9 東京"));
  EXPECT_FALSE(moin::bpe::is_nfc_quick("e\xCC\x81"));
}

}  // namespace
