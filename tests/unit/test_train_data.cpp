// The trainer's data path (packing, order, cursor, validation set) and its learning-rate schedule, each
// against a direct computation.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "moin/core/error.h"
#include "moin/train/data.h"
#include "moin/train/partition_layout.h"
#include "moin/train/schedule.h"
#include "test_util.h"
#include "train_fixtures.h"

namespace {

using moin::test::TempDir;

// The framed stream of documents in `order`: [BOS] doc EOS each.
std::vector<std::int64_t> framed(const std::vector<std::vector<int>>& docs, const std::vector<std::int64_t>& order,
                                 int bos, int eos) {
  std::vector<std::int64_t> out;
  for (auto i : order) {
    if (bos >= 0) out.push_back(bos);
    for (int t : docs[static_cast<std::size_t>(i)]) out.push_back(t);
    out.push_back(eos);
  }
  return out;
}

TEST(TrainData, PacksDocumentsWithBosAndEosAndStrideSeqLen) {
  TempDir dir;
  std::vector<std::vector<int>> docs = {{10, 11, 12}, {}, {20, 21, 22, 23, 24}, {30}};
  moin::test::write_shard(dir / "s", docs, 64);
  moin::DocumentSet set({dir / "s"});
  ASSERT_EQ(set.num_docs(), 4);
  moin::PackingOptions po;
  po.seq_len = 4;
  po.shuffle = false;
  moin::PackedStream stream(set, po);
  auto want = framed(docs, {0, 1, 2, 3}, 1, 2);
  ASSERT_EQ(stream.epoch_tokens(), static_cast<std::int64_t>(want.size()));
  // Three epochs of the unshuffled stream, read as overlapping windows of 5 tokens, 4 apart.
  std::vector<std::int64_t> repeated;
  for (int e = 0; e < 3; ++e) repeated.insert(repeated.end(), want.begin(), want.end());
  auto batch = stream.next(6);
  ASSERT_EQ(batch.sizes(), (std::vector<std::int64_t>{6, 5}));
  for (int b = 0; b < 6; ++b)
    for (int t = 0; t < 5; ++t)
      EXPECT_EQ(batch[b][t].item<std::int64_t>(), repeated[static_cast<std::size_t>(b * 4 + t)]) << b << "," << t;
  EXPECT_EQ(stream.cursor().tokens, 24);
  EXPECT_EQ(stream.cursor().epoch, 24 / static_cast<std::int64_t>(want.size()));
}

TEST(TrainData, NoBosWhenDisabled) {
  TempDir dir;
  std::vector<std::vector<int>> docs = {{10, 11}, {20}};
  moin::test::write_shard(dir / "s", docs, 64);
  moin::DocumentSet set({dir / "s"});
  moin::PackingOptions po;
  po.seq_len = 4;
  po.shuffle = false;
  po.bos_id = -1;
  moin::PackedStream stream(set, po);
  auto b = stream.next(1);
  std::vector<std::int64_t> want = {10, 11, 2, 20, 2};
  for (int t = 0; t < 5; ++t) EXPECT_EQ(b[0][t].item<std::int64_t>(), want[static_cast<std::size_t>(t)]);
}

TEST(TrainData, DocumentOrderIsAFixedPermutationPerEpoch) {
  auto a = moin::document_order(1000, 7, 0);
  auto b = moin::document_order(1000, 7, 0);
  auto c = moin::document_order(1000, 7, 1);
  auto d = moin::document_order(1000, 8, 0);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, d);
  std::set<std::int64_t> seen(a.begin(), a.end());
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_EQ(*seen.begin(), 0);
  EXPECT_EQ(*seen.rbegin(), 999);
  // Pinned (computed independently, in Python, from the splitmix64 definition): the order must never
  // change between versions, or resumed runs would see other data.
  EXPECT_EQ(moin::document_order(8, 0, 0), (std::vector<std::int64_t>{4, 3, 2, 7, 5, 6, 0, 1}));
  EXPECT_EQ(moin::document_order(8, 5, 2), (std::vector<std::int64_t>{0, 1, 3, 5, 6, 2, 4, 7}));
}

TEST(TrainData, ShuffledStreamFollowsTheEpochOrder) {
  TempDir dir;
  auto docs = moin::test::cluster_docs(0, 30, 256, 1, 5);
  moin::test::write_shard(dir / "s", docs, 256);
  moin::DocumentSet set({dir / "s"});
  moin::PackingOptions po;
  po.seq_len = 16;
  po.seed = 42;
  moin::PackedStream stream(set, po);
  auto want = framed(docs, moin::document_order(30, 42, 0), 1, 2);
  auto e1 = framed(docs, moin::document_order(30, 42, 1), 1, 2);
  want.insert(want.end(), e1.begin(), e1.end());
  std::int64_t n = static_cast<std::int64_t>(want.size()) / 16 - 1;
  auto batch = stream.next(static_cast<int>(n));
  for (std::int64_t b = 0; b < n; ++b)
    for (int t = 0; t < 17; ++t)
      ASSERT_EQ(batch[b][t].item<std::int64_t>(), want[static_cast<std::size_t>(b * 16 + t)]) << b << "," << t;
}

TEST(TrainData, CursorRestoresTheStreamExactly) {
  TempDir dir;
  moin::test::write_shard(dir / "a", moin::test::cluster_docs(0, 17, 256, 2, 1), 256);
  moin::test::write_shard(dir / "b", moin::test::cluster_docs(1, 9, 256, 2, 1), 256);
  moin::DocumentSet set({dir / "a", dir / "b"});
  EXPECT_EQ(set.num_docs(), 26);
  moin::PackingOptions po;
  po.seq_len = 13;
  po.seed = 3;
  moin::PackedStream s1(set, po);
  for (int i = 0; i < 7; ++i) s1.next(3);
  auto saved = moin::DataCursor::from_json(s1.cursor().to_json());
  EXPECT_EQ(saved, s1.cursor());
  auto rest1 = s1.next(40);  // crosses at least one epoch boundary
  moin::PackedStream s2(set, po, saved);
  auto rest2 = s2.next(40);
  EXPECT_TRUE(torch::equal(rest1, rest2));
  EXPECT_EQ(s1.cursor(), s2.cursor());
  // A cursor outside the data is a user error (the partition changed).
  moin::DataCursor bad;
  bad.index = 1000;
  EXPECT_THROW(moin::PackedStream(set, po, bad), moin::UserError);
}

TEST(TrainData, ValidationSetIsTheHeadOfTheStreamInAFixedShuffledOrder) {
  TempDir dir;
  auto docs = moin::test::cluster_docs(0, 20, 256, 1, 9);
  moin::test::write_shard(dir / "v", docs, 256);
  moin::DocumentSet set({dir / "v"});
  auto order = moin::document_order(20, moin::kValidationOrderSeed, 0);
  // Shuffled: the head of a split sorted by source would hold one source only.
  std::vector<std::int64_t> identity(20);
  for (int i = 0; i < 20; ++i) identity[static_cast<std::size_t>(i)] = i;
  ASSERT_NE(order, identity);
  auto want = framed(docs, order, 1, 2);
  auto v = moin::make_validation_set(set, 8, 40, 1, 2);
  ASSERT_EQ(v.size(0), 5);
  for (int b = 0; b < 5; ++b)
    for (int t = 0; t < 9; ++t) EXPECT_EQ(v[b][t].item<std::int64_t>(), want[static_cast<std::size_t>(b * 8 + t)]);
  // Asking for more than the split holds gives every whole sequence, none repeated.
  auto all = moin::make_validation_set(set, 8, 1 << 20, 1, 2);
  EXPECT_EQ(all.size(0), (static_cast<std::int64_t>(want.size()) - 1) / 8);
  // A split shorter than one sequence gives one shorter sequence.
  moin::test::write_shard(dir / "tiny", {{5, 6}}, 256);
  moin::DocumentSet tiny({dir / "tiny"});
  auto t = moin::make_validation_set(tiny, 8, 100, 1, 2);
  ASSERT_EQ(t.size(0), 1);
  EXPECT_EQ(t.size(1), 4);  // BOS 5 6 EOS
}

TEST(TrainData, PartitionClustersFromTheManifestOnly) {
  TempDir dir;
  moin::test::write_partition(dir / "p", 3, 128, 5, 2);
  EXPECT_EQ(moin::partition_clusters(dir / "p"), (std::vector<int>{0, 1, 2}));
  // A manifest of another format, or of a newer version, is refused; so is a folder without one.
  moin::fs::write_json_atomic(dir.path / "p" / "manifest.json", {{"num_clusters", 3}});
  EXPECT_THROW(moin::partition_clusters(dir / "p"), moin::UserError);
  moin::fs::write_json_atomic(dir.path / "p" / "manifest.json",
                              {{"format", "moin-partition"}, {"schema_version", 2}, {"k", 3}});
  EXPECT_THROW(moin::partition_clusters(dir / "p"), moin::UserError);
  std::filesystem::remove(dir.path / "p" / "manifest.json");
  EXPECT_THROW(moin::partition_clusters(dir / "p"), moin::UserError);
  EXPECT_THROW(moin::partition_clusters(dir / "missing"), moin::UserError);
  std::filesystem::create_directories(dir.path / "empty");
  EXPECT_THROW(moin::partition_clusters(dir / "empty"), moin::UserError);
  EXPECT_EQ(moin::cluster_shard("P", 2, "valid"), "P/clusters/2/valid");
}

TEST(TrainSchedule, WarmupThenCosineToTheFloor) {
  moin::LrSchedule s{1e-3, 10, 110, 0.1};
  // Hand computation: warmup lr * (s + 1) / 10; then floor + (peak - floor) (1 + cos(pi p)) / 2, p = (s - 10) / 100.
  EXPECT_DOUBLE_EQ(s.at(0), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(4), 5e-4);
  EXPECT_DOUBLE_EQ(s.at(9), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);
  EXPECT_NEAR(s.at(60), 1e-4 + 9e-4 * 0.5, 1e-15);  // halfway: cos(pi/2) = 0
  EXPECT_NEAR(s.at(35), 1e-4 + 9e-4 * 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-15);
  EXPECT_NEAR(s.at(109), 1e-4 + 9e-4 * 0.5 * (1 + std::cos(M_PI * 0.99)), 1e-15);
  EXPECT_NEAR(s.at(110), 1e-4, 1e-15);
  EXPECT_NEAR(s.at(500), 1e-4, 1e-15);  // past the end: the floor
  moin::LrSchedule flat{3e-4, 0, 1, 1.0};
  EXPECT_DOUBLE_EQ(flat.at(0), 3e-4);
  moin::LrSchedule no_warmup{2.0, 0, 4, 0.0};
  EXPECT_DOUBLE_EQ(no_warmup.at(0), 2.0);
  EXPECT_NEAR(no_warmup.at(2), 1.0, 1e-15);
}

}  // namespace
