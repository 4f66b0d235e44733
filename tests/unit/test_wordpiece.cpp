// WordPiece on a hand-made vocabulary: the rules themselves (the Python check compares with Hugging Face
// on the real vocabulary and corpus).
#include <gtest/gtest.h>

#include "moin/core/error.h"
#include "moin/model/wordpiece.h"
#include "test_util.h"

namespace moin {
namespace {

WordPiece tiny(bool lower = true, int max_length = 64) {
  std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "hello",
                                    "world", ",", "!", "cafe", "caf", "##e", "中", "文", "a", "##b", "$",
                                    "Hello", "é"};
  WordPieceOptions o;
  o.lower_case = lower;
  o.strip_accents = lower;
  o.max_length = max_length;
  o.max_input_chars_per_word = 10;
  return WordPiece(vocab, o);
}

TEST(WordPiece, GreedyLongestMatchWithContinuations) {
  auto wp = tiny();
  std::vector<int> ids;
  wp.wordpiece("unaffable", ids);
  EXPECT_EQ(ids, (std::vector<int>{4, 5, 6}));
  ids.clear();
  wp.wordpiece("unaffablex", ids);  // no piece covers the tail: the whole word is [UNK]
  EXPECT_EQ(ids, (std::vector<int>{1}));
  ids.clear();
  wp.wordpiece("abbbbbbbbbb", ids);  // 11 chars > max_input_chars_per_word (10)
  EXPECT_EQ(ids, (std::vector<int>{1}));
  ids.clear();
  wp.wordpiece("abbbbbbbbb", ids);  // 10 chars: fine
  EXPECT_EQ(ids.size(), 10u);
}

TEST(WordPiece, BasicTokenizationCleansLowersStripsAndSplits) {
  auto wp = tiny();
  EXPECT_EQ(wp.basic_tokenize("Hello,  WORLD!\tCafé"),
            (std::vector<std::string>{"hello", ",", "world", "!", "cafe"}));
  // Control characters vanish (they do not split words); CJK ideographs stand alone; $ is punctuation.
  EXPECT_EQ(wp.basic_tokenize("he\x01llo 中文x $5"),
            (std::vector<std::string>{"hello", "中", "文", "x", "$", "5"}));
  // Non-breaking space and U+3000 are whitespace; invalid UTF-8 is dropped like U+FFFD.
  EXPECT_EQ(wp.basic_tokenize("a\xC2\xA0" "b\xE3\x80\x80" "c\xFF" "d"), (std::vector<std::string>{"a", "b", "cd"}));
  auto cased = tiny(false);
  EXPECT_EQ(cased.basic_tokenize("Hello Café"), (std::vector<std::string>{"Hello", "Café"}));
}

TEST(WordPiece, EncodeFramesAndTruncates) {
  auto wp = tiny(true, 5);
  EXPECT_EQ(wp.encode(""), (std::vector<int>{2, 3}));
  EXPECT_EQ(wp.encode("hello world"), (std::vector<int>{2, 7, 8, 3}));
  // max_length 5: [CLS] + 3 tokens + [SEP], cutting inside a word's pieces like the reference does.
  EXPECT_EQ(wp.encode("hello unaffable world"), (std::vector<int>{2, 7, 4, 5, 3}));
}

TEST(WordPiece, LoadReadsTheFolderAndNamesMissingFiles) {
  test::TempDir dir;
  try {
    WordPiece::load(dir.path.string());
    FAIL() << "expected a UserError";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("vocab.txt"), std::string::npos);
  }
  test::write_file(dir / "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nHello\nhello\n");
  test::write_file(dir / "tokenizer_config.json", R"({"do_lower_case": false, "model_max_length": 1e30})");
  auto wp = WordPiece::load(dir.path.string(), 16);
  EXPECT_FALSE(wp.options().lower_case);
  EXPECT_EQ(wp.options().max_length, 16);
  EXPECT_EQ(wp.encode("Hello hello"), (std::vector<int>{2, 4, 5, 3}));
  test::write_file(dir / "vocab.txt", "[PAD]\n[CLS]\n[SEP]\n");
  EXPECT_THROW(WordPiece::load(dir.path.string()), UserError);
}

TEST(WordPiece, Utf8RoundTrip) {
  std::string s = "aé中😀";
  std::u32string u = utf8_decode(s);
  ASSERT_EQ(u.size(), 4u);
  EXPECT_EQ(u[3], U'\U0001F600');
  std::string back;
  for (char32_t c : u) utf8_append(back, c);
  EXPECT_EQ(back, s);
  EXPECT_EQ(utf8_decode("\xC0\xAF"), std::u32string(2, 0xFFFD));  // overlong '/'
}

}  // namespace
}  // namespace moin
