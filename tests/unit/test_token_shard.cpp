#include <gtest/gtest.h>

#include <random>

#include "moin/core/error.h"
#include "moin/core/hash.h"
#include "moin/data/token_shard.h"
#include "test_util.h"

namespace {

using moin::test::TempDir;

TEST(Hash, Sha256KnownVectors) {
  EXPECT_EQ(moin::sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(moin::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(moin::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  std::string million(1000000, 'a');
  EXPECT_EQ(moin::sha256_hex(million), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  TempDir dir;
  moin::test::write_file(dir / "f", "abc");
  EXPECT_EQ(moin::sha256_file(dir / "f"), moin::sha256_hex("abc"));
  EXPECT_THROW(moin::sha256_file(dir / "missing"), moin::UserError);
}

TEST(Hash, StableHashIsStable) {
  // Fixed values: the train/valid split of every partition depends on them never changing.
  EXPECT_EQ(moin::stable_hash64("doc-1"), moin::stable_hash64("doc-1"));
  EXPECT_NE(moin::stable_hash64("doc-1"), moin::stable_hash64("doc-2"));
  EXPECT_NE(moin::stable_hash64("doc-1", 1), moin::stable_hash64("doc-1", 2));
  // Reference values from an independent Python implementation of FNV-1a 64 + splitmix64.
  EXPECT_EQ(moin::stable_hash64(""), 0xc3817c016ba4ff30ULL);
  EXPECT_EQ(moin::stable_hash64("doc-1"), 0x46c876cb8cfc63f5ULL);
  EXPECT_EQ(moin::stable_hash64("doc-1", 7), 0x8517a7cd52e542aeULL);
}

std::vector<std::vector<int>> random_docs(int n, int vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int>> docs(n);
  for (auto& d : docs) {
    d.resize(rng() % 50);  // includes empty documents
    for (auto& t : d) t = static_cast<int>(rng() % vocab);
  }
  return docs;
}

void roundtrip(int vocab, const char* dtype) {
  TempDir dir;
  auto docs = random_docs(200, vocab, 3);
  std::vector<int> stream;
  {
    moin::TokenShardWriter w(dir / "s/train", vocab, "tok.model", "abc");
    for (auto& d : docs) {
      w.append(d);
      stream.insert(stream.end(), d.begin(), d.end());
    }
    EXPECT_EQ(w.num_docs(), 200);
    w.finish();
    w.finish();  // idempotent
  }
  moin::TokenShardReader r(dir / "s/train.bin");
  EXPECT_EQ(r.info().dtype, dtype);
  EXPECT_EQ(r.info().tokenizer_sha256, "abc");
  EXPECT_EQ(r.num_docs(), 200);
  EXPECT_EQ(r.num_tokens(), static_cast<std::int64_t>(stream.size()));
  EXPECT_EQ(r.vocab_size(), vocab);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(r.doc(i), docs[i]) << i;
  for (std::size_t p = 0; p < stream.size(); p += 37) EXPECT_EQ(r.token(p), stream[p]);
  std::vector<int> mid(100);
  r.read_tokens(10, 100, mid.data());
  EXPECT_TRUE(std::equal(mid.begin(), mid.end(), stream.begin() + 10));
  EXPECT_THROW(r.doc(200), std::out_of_range);
  EXPECT_THROW(r.read_tokens(stream.size() - 5, 10, mid.data()), std::out_of_range);
  // Moves keep the mapping valid.
  moin::TokenShardReader moved = std::move(r);
  EXPECT_EQ(moved.doc(5), docs[5]);
  EXPECT_EQ(moin::test::read_file(dir / "s/train.bin").size(), stream.size() * (vocab <= 65536 ? 2 : 4));
}

TEST(TokenShard, RoundTripUint16) { roundtrip(512, "uint16"); }
TEST(TokenShard, RoundTripUint32) { roundtrip(70000, "uint32"); }

TEST(TokenShard, EmptyShard) {
  TempDir dir;
  moin::TokenShardWriter(dir / "e", 100).finish();
  moin::TokenShardReader r(dir / "e");
  EXPECT_EQ(r.num_docs(), 0);
  EXPECT_EQ(r.num_tokens(), 0);
}

TEST(TokenShard, RejectsOutOfVocabularyIds) {
  TempDir dir;
  moin::TokenShardWriter w(dir / "x", 10);
  EXPECT_THROW(w.append(std::vector<int>{1, 10}), std::invalid_argument);
  EXPECT_THROW(w.append(std::vector<int>{-1}), std::invalid_argument);
}

TEST(TokenShard, UnfinishedOrCorruptShardIsAUserError) {
  TempDir dir;
  {
    moin::TokenShardWriter w(dir / "u", 100);
    w.append(std::vector<int>{1, 2, 3});
    // destroyed without finish(): no shard at all
  }
  EXPECT_THROW(moin::TokenShardReader(dir / "u"), moin::UserError);
  EXPECT_FALSE(std::filesystem::exists(dir / "u.bin"));
  {
    moin::TokenShardWriter w(dir / "c", 100);
    w.append(std::vector<int>{1, 2, 3});
    w.append(std::vector<int>{4});
    w.finish();
  }
  // Truncated token file.
  std::filesystem::resize_file(dir / "c.bin", 4);
  EXPECT_THROW(moin::TokenShardReader(dir / "c"), moin::UserError);
  // Rewriting a shard invalidates the old header at once.
  moin::TokenShardWriter w(dir / "c", 100);
  EXPECT_FALSE(std::filesystem::exists(dir / "c.json"));
}

}  // namespace
