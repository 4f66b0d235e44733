#include <gtest/gtest.h>
#include <torch/torch.h>

#include "moin/core/error.h"
#include "moin/data/tokenizer.h"
#include "test_util.h"
#include "tokenizer_fixtures.h"

namespace {

using moin::test::TempDir;

// The tokenizer of this file's tests.
std::string tiny_tokenizer(const TempDir& dir) { return moin::test::train_tiny_tokenizer(dir, 300); }

// The foundation's known trap: sentencepiece (with its own protobuf) and LibTorch in one process.
TEST(Tokenizer, CoexistsWithLibTorchInOneProcess) {
  TempDir dir;
  auto tok = moin::Tokenizer::load(tiny_tokenizer(dir));
  auto ids = tok.encode("the cat sat on the mat.");
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(tok.decode(ids), "the cat sat on the mat.");

  auto t = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kLong).to(torch::kFloat);
  auto y = torch::matmul(t.unsqueeze(0), t.unsqueeze(1));
  EXPECT_GT(y.item<float>(), 0.0f);
  std::string path = dir / "tensor.pt";
  torch::save(t, path);
  torch::Tensor back;
  torch::load(back, path);
  EXPECT_TRUE(torch::equal(back, t));
}

TEST(Tokenizer, SpecialIdsAndRoundTrip) {
  TempDir dir;
  auto tok = moin::Tokenizer::load(tiny_tokenizer(dir));
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.pad_id(), 3);
  EXPECT_GE(tok.vocab_size(), 50);
  // byte fallback: characters never seen in training still round-trip.
  std::string text = "a dog ran home: ünïcödé ✓ 123";
  EXPECT_EQ(tok.decode(tok.encode(text)), text);
  EXPECT_TRUE(tok.encode("").empty());
  std::string long_text;
  for (int i = 0; i < 20000; ++i) long_text += "the cat ";
  EXPECT_GT(tok.encode(long_text).size(), 10000u);
}

TEST(Tokenizer, MissingOrInvalidModelIsAUserError) {
  TempDir dir;
  EXPECT_THROW(moin::Tokenizer::load(dir / "missing.model"), moin::UserError);
  moin::test::write_file(dir / "junk.model", "not a model");
  EXPECT_THROW(moin::Tokenizer::load(dir / "junk.model"), moin::UserError);
}

TEST(Tokenizer, SharedTok512LoadsWhenPresent) {
  MOIN_REQUIRE_SHARED_DATA(data);
  auto tok = moin::Tokenizer::load(data + "/models/stories260K/tok512.model");
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.decode(tok.encode("Once upon a time")), "Once upon a time");
}

}  // namespace
