#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <cstring>
#include <random>
#include <sstream>
#include <tuple>

#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "moin/data/token_shard.h"
#include "moin/data/tokenizer.h"
#include "moin/data/tokenizer_corpus.h"
#include "moin/partition/kmeans.h"
#include "moin/partition/partition.h"
#include "moin/route/router.h"
#include "test_util.h"

namespace {

namespace stdfs = std::filesystem;
using moin::test::TempDir;
using json = nlohmann::json;

// Three topics with their own words (plus shared filler), 120 documents each, labels in meta.topic.
std::string synthetic_corpus(int per_topic = 120, unsigned seed = 5) {
  const std::vector<std::vector<std::string>> topics = {
      {"rocket", "orbit", "planet", "astronaut", "launch", "moon", "satellite", "telescope", "galaxy", "comet"},
      {"flour", "oven", "recipe", "butter", "sugar", "bake", "dough", "kitchen", "whisk", "pastry"},
      {"goal", "match", "team", "striker", "league", "referee", "season", "coach", "stadium", "penalty"}};
  const std::vector<std::string> filler = {"really", "quite", "today", "people", "think", "good", "great", "many"};
  const char* names[] = {"space", "baking", "football"};
  std::mt19937 rng(seed);
  std::string out;
  for (int i = 0; i < per_topic * 3; ++i) {
    int t = i % 3;
    std::string text;
    int n = 20 + static_cast<int>(rng() % 40);
    for (int w = 0; w < n; ++w) {
      const auto& pool = (rng() % 3 == 0) ? filler : topics[t];
      text += pool[rng() % pool.size()];
      text += (w % 12 == 11) ? ".\\n" : " ";
    }
    out += "{\"text\": \"" + text + "\", \"meta\": {\"topic\": \"" + names[t] + "\"}}\n";
  }
  return out;
}

struct Fixture {
  TempDir dir;
  std::string corpus, tokenizer;
  Fixture() {
    corpus = dir / "corpus.jsonl";
    moin::test::write_file(corpus, synthetic_corpus());
    // The tokenizer is trained on the JSONL corpus itself (through the corpus reader).
    moin::TokenizerTrainOptions t;
    t.input = {corpus};
    t.model_prefix = dir / "tok";
    t.vocab_size = 400;
    moin::CorpusOptions c;
    auto rep = moin::train_tokenizer_on_corpus(t, c);
    EXPECT_EQ(rep.documents, 360);
    tokenizer = dir / "tok.model";
  }
  moin::PartitionOptions options(const std::string& out) const {
    moin::PartitionOptions o;
    o.corpus.inputs = {corpus};
    o.corpus.label_field = "meta.topic";
    o.tokenizer = tokenizer;
    o.output = out;
    o.kmeans.k = 3;
    o.kmeans.nredo = 3;
    o.embedder.dim = 8;
    o.embedder.max_features = 256;
    o.valid_fraction = 0.1;
    o.batch_docs = 50;  // several batches
    o.threads = 2;
    return o;
  }
};

// The corpus' documents, in corpus order.
std::vector<std::string> corpus_texts(const std::string& corpus) {
  moin::CorpusOptions c;
  c.inputs = {corpus};
  moin::CorpusReader r(c);
  std::vector<std::string> texts;
  moin::Document d;
  while (r.next(d)) texts.push_back(d.text);
  return texts;
}

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) out.push_back(json::parse(line));
  return out;
}

TEST(Partition, EndToEndOnASyntheticLabelledCorpus) {
  Fixture f;
  std::string out = f.dir / "part";
  auto s = moin::run_partition(f.options(out));
  EXPECT_EQ(s.clusters, 3);
  EXPECT_EQ(s.documents, 360);
  EXPECT_GT(s.nmi, 0.9) << "three disjoint vocabularies must be found";
  EXPECT_GT(s.purity, 0.95);
  EXPECT_GT(s.valid_documents, 15);
  EXPECT_LT(s.valid_documents, 60);

  for (const char* f2 : {"manifest.json", "report.json", "report.md", "fit.json", "centroids.npy", "kmeans.json",
                         "embedder/embedder.json", "assignments.jsonl", "partition.config.json", "moin.log"})
    EXPECT_TRUE(stdfs::exists(stdfs::path(out) / f2)) << f2;
  auto manifest = moin::fs::read_json(stdfs::path(out) / "manifest.json");
  EXPECT_EQ(manifest["schema_version"], 1);
  EXPECT_EQ(manifest["centroids"]["shape"], json::array({3, 8}));
  EXPECT_EQ(manifest["documents"], 360);

  // Every document's tokens sit in its cluster's shard, in corpus order.
  auto tok = moin::Tokenizer::load(f.tokenizer);
  auto assignments = read_jsonl(out + "/assignments.jsonl");
  ASSERT_EQ(assignments.size(), 360u);
  std::vector<std::string> texts = corpus_texts(f.corpus);
  std::int64_t total_docs = 0, total_tokens = 0;
  for (int c = 0; c < 3; ++c) {
    for (const char* split : {"train", "valid"}) {
      moin::TokenShardReader shard(out + "/clusters/" + std::to_string(c) + "/" + split);
      EXPECT_EQ(manifest["clusters"][c][split]["documents"], shard.num_docs());
      EXPECT_EQ(shard.info().tokenizer_sha256.size(), 64u);
      std::int64_t j = 0;
      for (std::size_t i = 0; i < assignments.size(); ++i) {
        if (assignments[i]["cluster"] != c || assignments[i]["split"] != split) continue;
        ASSERT_LT(j, shard.num_docs());
        ASSERT_EQ(shard.doc(j), tok.encode(texts[i])) << "cluster " << c << " " << split << " doc " << j;
        EXPECT_EQ(assignments[i]["tokens"], shard.doc_length(j));
        ++j;
      }
      EXPECT_EQ(j, shard.num_docs());
      total_docs += shard.num_docs();
      total_tokens += shard.num_tokens();
    }
  }
  EXPECT_EQ(total_docs, 360);
  EXPECT_EQ(total_tokens, s.tokens);

  // The streaming assignment agrees with k-means' own assign() on the saved state, and the router sends
  // every document to the cluster the partition gave it, at the same distance.
  auto embedder = moin::load_embedder(out + "/embedder");
  auto km = moin::load_kmeans(out);
  auto x = embedder->embed(texts);
  auto a = moin::assign(x.data(), static_cast<std::int64_t>(texts.size()), km);
  for (std::size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(assignments[i]["cluster"], a.cluster[i]) << i;
  auto routes = moin::Router::load(out).route(texts, /*top_k=*/1, /*batch_size=*/7);
  for (std::size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(assignments[i]["cluster"], routes[i].expert()) << i;
    EXPECT_EQ(assignments[i]["distance"].get<float>(), routes[i].distance()) << i;
  }

  auto report = moin::fs::read_json(stdfs::path(out) / "report.json");
  EXPECT_NEAR(report["nmi"].get<double>(), s.nmi, 1e-12);
  EXPECT_EQ(report["clusters"][0]["top_labels"].size(), 1u);
  EXPECT_FALSE(report["clusters"][0]["top_terms"].empty());
  EXPECT_EQ(report["ingest"]["documents"], 360);
}

// The byte comparison of two partition folders' outputs.
void expect_same_outputs(const std::string& a, const std::string& b) {
  for (int c = 0; c < 3; ++c)
    for (const char* split : {"train", "valid"})
      for (const char* ext : {".bin", ".idx", ".json"}) {
        std::string rel = "/clusters/" + std::to_string(c) + "/" + split + ext;
        EXPECT_EQ(moin::test::read_file(a + rel), moin::test::read_file(b + rel)) << rel;
      }
  EXPECT_EQ(moin::test::read_file(a + "/assignments.jsonl"), moin::test::read_file(b + "/assignments.jsonl"));
}

TEST(Partition, ShardedAssignmentAndMergeEqualsOneRun) {
  Fixture f;
  std::string one = f.dir / "one", sharded = f.dir / "sharded";
  moin::run_partition(f.options(one));
  // The sharded run starts from the same fit (as N processes would after one `fit`).
  stdfs::create_directories(sharded);
  for (const char* e : {"embedder", "centroids.npy", "kmeans.json", "fit.json", "partition.config.json"})
    stdfs::copy(stdfs::path(one) / e, stdfs::path(sharded) / e, stdfs::copy_options::recursive);
  auto o = f.options(sharded);
  o.batch_docs = 7;  // different batches must not change anything
  for (int s = 2; s >= 0; --s) moin::partition_assign(o, s, 3);
  auto summary = moin::partition_merge(o);  // num_shards detected from work/
  EXPECT_EQ(summary.documents, 360);
  expect_same_outputs(one, sharded);
  EXPECT_EQ(moin::fs::read_json(sharded + "/manifest.json")["num_shards"], 3);
  // The ingest reports of the slices add up to one read.
  EXPECT_EQ(moin::fs::read_json(sharded + "/report.json")["ingest"],
            moin::fs::read_json(one + "/report.json")["ingest"]);
}

TEST(Partition, MergeRefusesMissingSlices) {
  Fixture f;
  std::string out = f.dir / "p";
  auto o = f.options(out);
  moin::partition_fit(o);
  EXPECT_THROW(moin::partition_merge(o), moin::UserError);  // nothing assigned yet
  moin::partition_assign(o, 0, 2);
  {
    std::string msg = moin::test::user_error_of([&] { moin::partition_merge(o); });
    EXPECT_NE(msg.find("slices 1 of 2"), std::string::npos) << msg;
  }
  moin::partition_assign(o, 1, 2);
  EXPECT_EQ(moin::partition_merge(o).documents, 360);
}

TEST(Partition, ResumesAndRefusesChangedOptions) {
  Fixture f;
  std::string out = f.dir / "p", ref = f.dir / "ref";
  auto o = f.options(out);
  moin::run_partition(o);
  stdfs::create_directories(ref);
  stdfs::copy(out + "/clusters", ref + "/clusters", stdfs::copy_options::recursive);
  stdfs::copy(out + "/assignments.jsonl", ref + "/assignments.jsonl");
  auto manifest_time = stdfs::last_write_time(out + "/manifest.json");
  moin::run_partition(o);  // a finished stage: no-op
  EXPECT_EQ(stdfs::last_write_time(out + "/manifest.json"), manifest_time);

  // A killed run: merge outputs gone, one slice half-written (temporary folder), one cluster shard cut.
  stdfs::remove(out + "/manifest.json");
  stdfs::remove_all(out + "/work/shard-00000-of-00001");
  stdfs::create_directories(out + "/work/.shard-00000-of-00001.tmp");
  moin::test::write_file(out + "/work/.shard-00000-of-00001.tmp/tokens.bin", "garbage");
  stdfs::resize_file(out + "/clusters/1/train.bin", 3);
  moin::run_partition(o);
  expect_same_outputs(ref, out);
  EXPECT_FALSE(stdfs::exists(out + "/work/.shard-00000-of-00001.tmp"));

  // Other options against a finished folder: an error naming the option, unless overwrite.
  auto changed = o;
  changed.kmeans.k = 2;
  {
    std::string msg = moin::test::user_error_of([&] { moin::run_partition(changed); });
    EXPECT_NE(msg.find("kmeans.k"), std::string::npos) << msg;
  }
  changed.threads = 1;  // not part of the fingerprint
  changed.kmeans.k = 3;
  EXPECT_NO_THROW(moin::run_partition(changed));
  changed.kmeans.k = 2;
  changed.overwrite = true;
  EXPECT_EQ(moin::run_partition(changed).clusters, 2);
}

TEST(Partition, BadInputIsCountedOrStopsInStrictMode) {
  Fixture f;
  std::string bad = f.dir / "bad.jsonl";
  moin::test::write_file(bad, synthetic_corpus(20) + "{\"text\": broken\n{\"text\": 5}\n");
  auto o = f.options(f.dir / "p");
  o.corpus.inputs = {bad};
  o.corpus.label_field.clear();
  auto s = moin::run_partition(o);
  EXPECT_EQ(s.documents, 60);
  EXPECT_LT(s.nmi, 0);  // no labels, no NMI
  auto report = moin::fs::read_json(f.dir / "p/report.json");
  EXPECT_EQ(report["ingest"]["issues"]["malformed_json"]["count"], 1);
  EXPECT_EQ(report["ingest"]["issues"]["non_string_text"]["count"], 1);
  EXPECT_NE(moin::test::read_file(f.dir / "p/report.md").find(bad + ":61"), std::string::npos);

  o.output = f.dir / "strict";
  o.corpus.strict = true;
  {
    std::string msg = moin::test::user_error_of([&] { moin::run_partition(o); });
    EXPECT_NE(msg.find(bad + ":61"), std::string::npos) << msg;
  }
  // Fewer documents than clusters.
  moin::test::write_file(f.dir / "tiny.jsonl", "{\"text\": \"only one\"}\n");
  o.corpus.inputs = {f.dir / "tiny.jsonl"};
  o.output = f.dir / "tiny";
  EXPECT_THROW(moin::run_partition(o), moin::UserError);
}

TEST(Partition, Cli) {
  Fixture f;
  std::string out = f.dir / "cli";
  auto r = moin::test::run_moin("partition --input " + f.corpus +
                                " --text-field text --label-field meta.topic --tokenizer " + f.tokenizer +
                                " --clusters 3 --embedder tfidf --output " + out +
                                " --set embedder.dim=8 --set embedder.max_features=256 --set kmeans.nredo=3 -q");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(j["documents"], 360);
  EXPECT_GT(j["nmi"].get<double>(), 0.9);
  // Later steps need only --output; a finished merge is a no-op.
  r = moin::test::run_moin("partition merge --output " + out + " -q");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = moin::test::run_moin("partition --output " + out + " --clusters 4 -q");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("kmeans.k"), std::string::npos) << r.output;
  r = moin::test::run_moin("partition assign --output " + (f.dir / "nothing") + " --shard 0 --num-shards 2 -q");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = moin::test::run_moin("partition --input " + f.corpus + " --output " + (f.dir / "x") + " -q");
  EXPECT_EQ(r.exit_code, 2) << r.output;  // no tokenizer
  EXPECT_NE(r.output.find("tokenizer"), std::string::npos) << r.output;
  // tokenizer train reads JSONL through the corpus reader.
  r = moin::test::run_moin("tokenizer train --input " + f.corpus + " --output " + (f.dir / "tok2") +
                           " --vocab-size 400 -q");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(stdfs::exists(f.dir / "tok2.model"));
}

// A skewed corpus: topic 0 (space) has `big` times the documents of each other topic, interleaved.
std::string skewed_corpus(int per_topic = 60, int big = 5) {
  std::string all = synthetic_corpus(per_topic * big, 11), out;
  std::istringstream in(all);
  std::string line;
  int count[3] = {0, 0, 0}, i = 0;
  while (std::getline(in, line)) {
    int t = i++ % 3;
    if (count[t] < (t == 0 ? per_topic * big : per_topic)) {
      ++count[t];
      out += line + "\n";
    }
  }
  return out;
}

std::vector<std::int64_t> cluster_sizes(const std::string& dir) {
  auto m = moin::fs::read_json(stdfs::path(dir) / "manifest.json");
  std::vector<std::int64_t> out;
  for (const auto& c : m["clusters"]) out.push_back(c["documents"].get<std::int64_t>());
  return out;
}

TEST(Partition, BalancedAssignmentCapsEveryCluster) {
  Fixture f;
  std::string corpus = f.dir / "skewed.jsonl";
  moin::test::write_file(corpus, skewed_corpus());  // 300 + 60 + 60 documents
  const std::int64_t n = 420;
  auto o = f.options(f.dir / "plain");
  o.corpus.inputs = {corpus};
  moin::run_partition(o);
  auto plain = read_jsonl(f.dir / "plain/assignments.jsonl");
  const std::int64_t cap = moin::balanced_capacity(n, 3, 1.1);
  ASSERT_EQ(cap, 154);
  auto plain_sizes = cluster_sizes(f.dir / "plain");
  EXPECT_GT(*std::max_element(plain_sizes.begin(), plain_sizes.end()), cap) << "the corpus must need balancing";

  std::string out = f.dir / "bal";
  o.output = out;
  o.kmeans.balance_factor = 1.1;
  auto s = moin::run_partition(o);
  EXPECT_EQ(s.documents, n);
  EXPECT_EQ(s.capacity, cap);
  auto sizes = cluster_sizes(out);
  std::int64_t total = 0;
  for (auto v : sizes) {
    EXPECT_LE(v, cap);
    total += v;
  }
  EXPECT_EQ(total, n);  // every document exactly once
  auto manifest = moin::fs::read_json(stdfs::path(out) / "manifest.json");
  EXPECT_EQ(manifest["balance"]["capacity"], cap);
  EXPECT_EQ(manifest["balance"]["factor"], 1.1);
  EXPECT_EQ(manifest["balance"]["nearest_cluster_documents"], json(plain_sizes));
  EXPECT_EQ(moin::fs::read_json(stdfs::path(out) / "report.json")["balance"], manifest["balance"]);
  EXPECT_NE(moin::test::read_file(out + "/report.md").find("at most 154 documents per cluster"), std::string::npos);

  // assignments.jsonl: the capped cluster, and for moved documents their nearest (the unbalanced cluster).
  auto bal = read_jsonl(out + "/assignments.jsonl");
  ASSERT_EQ(bal.size(), plain.size());
  std::int64_t moved = 0;
  std::vector<std::int64_t> counted(6, 0);
  for (std::size_t i = 0; i < bal.size(); ++i) {
    EXPECT_EQ(bal[i]["ordinal"], plain[i]["ordinal"]);
    if (bal[i].contains("nearest")) {
      ++moved;
      EXPECT_NE(bal[i]["cluster"], bal[i]["nearest"]);
      EXPECT_EQ(bal[i]["nearest"], plain[i]["cluster"]);
      EXPECT_EQ(bal[i]["nearest_distance"], plain[i]["distance"]);
      EXPECT_GE(bal[i]["distance"].get<double>(), bal[i]["nearest_distance"].get<double>());
    } else {
      EXPECT_EQ(bal[i], plain[i]);
    }
    ++counted[2 * bal[i]["cluster"].get<int>() + (bal[i]["split"] == "valid" ? 1 : 0)];
  }
  EXPECT_GT(moved, 0);
  EXPECT_EQ(s.moved_documents, moved);
  EXPECT_EQ(manifest["balance"]["moved_documents"], moved);
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(moin::TokenShardReader(out + "/clusters/" + std::to_string(c) + "/train").num_docs(), counted[2 * c]);
    EXPECT_EQ(moin::TokenShardReader(out + "/clusters/" + std::to_string(c) + "/valid").num_docs(), counted[2 * c + 1]);
  }

  // An independent reference: every (distance, document, cluster) triple from the slice's distance rows,
  // sorted and taken greedily.
  {
    std::string raw = moin::test::read_file(out + "/work/shard-00000-of-00001/distances.f32");
    ASSERT_EQ(raw.size(), static_cast<std::size_t>(n) * 3 * sizeof(float));
    std::vector<float> rows(static_cast<std::size_t>(n) * 3);
    std::memcpy(rows.data(), raw.data(), raw.size());
    std::vector<std::tuple<float, std::int64_t, int>> pairs;
    for (std::int64_t i = 0; i < n; ++i)
      for (int c = 0; c < 3; ++c) pairs.emplace_back(rows[i * 3 + c], i, c);
    std::sort(pairs.begin(), pairs.end());
    std::vector<int> ref(n, -1);
    std::vector<std::int64_t> room(3, cap);
    for (const auto& [d, i, c] : pairs)
      if (ref[i] < 0 && room[c] > 0) {
        ref[i] = c;
        --room[c];
      }
    for (std::int64_t i = 0; i < n; ++i) {
      EXPECT_EQ(bal[i]["cluster"], ref[i]) << i;
      EXPECT_EQ(bal[i]["distance"].get<float>(), rows[i * 3 + ref[i]]) << i;
    }
  }

  // Re-running is a no-op; another factor is refused by name; below 1 is a clear error.
  auto t = stdfs::last_write_time(out + "/manifest.json");
  moin::run_partition(o);
  EXPECT_EQ(stdfs::last_write_time(out + "/manifest.json"), t);
  auto other = o;
  other.kmeans.balance_factor = 1.5;
  {
    std::string msg = moin::test::user_error_of([&] { moin::run_partition(other); });
    EXPECT_NE(msg.find("kmeans.balance_factor"), std::string::npos) << msg;
  }
  other.kmeans.balance_factor = 0.5;
  other.output = f.dir / "half";
  {
    std::string msg = moin::test::user_error_of([&] { moin::run_partition(other); });
    EXPECT_NE(msg.find("balance_factor must be 0 (off) or >= 1"), std::string::npos) << msg;
  }
  EXPECT_FALSE(stdfs::exists(f.dir / "half/fit.json"));
}

TEST(Partition, BalancedShardedEqualsOneRunAndCli) {
  Fixture f;
  std::string corpus = f.dir / "skewed.jsonl";
  moin::test::write_file(corpus, skewed_corpus());
  std::string one = f.dir / "one", sharded = f.dir / "sharded";
  auto o = f.options(one);
  o.corpus.inputs = {corpus};
  o.kmeans.balance_factor = 1.1;
  auto s1 = moin::run_partition(o);
  EXPECT_GT(s1.moved_documents, 0);
  stdfs::create_directories(sharded);
  for (const char* e : {"embedder", "centroids.npy", "kmeans.json", "fit.json", "partition.config.json"})
    stdfs::copy(stdfs::path(one) / e, stdfs::path(sharded) / e, stdfs::copy_options::recursive);
  o.output = sharded;
  o.batch_docs = 7;
  for (int s = 2; s >= 0; --s) moin::partition_assign(o, s, 3);
  auto s3 = moin::partition_merge(o);
  EXPECT_EQ(s3.moved_documents, s1.moved_documents);
  expect_same_outputs(one, sharded);
  EXPECT_EQ(moin::fs::read_json(sharded + "/manifest.json")["balance"],
            moin::fs::read_json(one + "/manifest.json")["balance"]);

  // The CLI, sharded: fit, assign each slice, merge, with the factor given once at fit.
  std::string cli = f.dir / "cli";
  std::string common = " --output " + cli + " -q";
  auto r = moin::test::run_moin("partition fit --input " + corpus + " --text-field text --label-field meta.topic" +
                                " --tokenizer " + f.tokenizer + " --clusters 3 --embedder tfidf" +
                                " --set embedder.dim=8 --set embedder.max_features=256 --set kmeans.nredo=3" +
                                " --set valid_fraction=0.1 --set kmeans.balance_factor=1.1" + common);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (int s = 0; s < 2; ++s) {
    r = moin::test::run_moin("partition assign --shard " + std::to_string(s) + " --num-shards 2" + common);
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  r = moin::test::run_moin("partition merge" + common);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(j["documents"], 420);
  EXPECT_EQ(j["balance_capacity"], 154);
  EXPECT_GT(j["moved_documents"].get<int>(), 0);
  for (auto v : cluster_sizes(cli)) EXPECT_LE(v, 154);
  r = moin::test::run_moin("partition --input " + corpus + " --tokenizer " + f.tokenizer +
                           " --clusters 3 --output " + (f.dir / "bad") + " --set kmeans.balance_factor=0.5 -q");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("balance_factor"), std::string::npos) << r.output;
}

// Ties: a partition whose centroids include exact duplicates (3 = 0, 4 = 1). Every document ties between a
// centroid and its copy; the partition gives it the lower index, and the router reproduces that on every
// training document (and ranks the copy second, at the same distance).
TEST(Partition, RouterReproducesTheAssignmentTiesIncluded) {
  Fixture f;
  std::string out = f.dir / "part";
  auto o = f.options(out);
  moin::partition_fit(o);
  auto km = moin::load_kmeans(out);
  const std::size_t d = static_cast<std::size_t>(km.d);
  for (int c : {0, 1}) km.centroids.insert(km.centroids.end(), km.centroids.begin() + c * d, km.centroids.begin() + (c + 1) * d);
  km.k = 5;
  moin::save_kmeans(out, km);
  moin::partition_assign(o, 0, 1);
  moin::partition_merge(o);
  auto assignments = read_jsonl(out + "/assignments.jsonl");
  std::vector<std::string> texts = corpus_texts(f.corpus);
  ASSERT_EQ(assignments.size(), texts.size());
  auto router = moin::Router::load(out);
  EXPECT_EQ(router.num_experts(), 5);
  auto routes = router.route(texts, /*top_k=*/2, /*batch_size=*/16);
  int tied = 0;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const int c = assignments[i]["cluster"].get<int>();
    ASSERT_LT(c, 3) << "a copy never wins a tie";
    EXPECT_EQ(routes[i].experts[0], c) << i;
    EXPECT_EQ(routes[i].distances[0], assignments[i]["distance"].get<float>()) << i;
    if (c < 2) {
      EXPECT_EQ(routes[i].experts[1], c + 3) << i;
      EXPECT_EQ(routes[i].distances[1], routes[i].distances[0]) << i;
      ++tied;
    }
  }
  EXPECT_GT(tied, 100);
}

TEST(Partition, SharedCorpusValidSplit) {
  MOIN_REQUIRE_SHARED_DATA(data);
  TempDir dir;
  moin::PartitionOptions o;
  o.corpus.inputs = {data + "/corpus/valid.jsonl"};
  o.corpus.label_field = "meta.pile_set_name";
  o.tokenizer = data + "/models/stories260K/tok512.model";
  o.output = dir / "p";
  o.kmeans.k = 10;
  auto s = moin::run_partition(o);
  std::string raw = moin::test::read_file(data + "/corpus/valid.jsonl");
  EXPECT_EQ(s.documents, std::count(raw.begin(), raw.end(), '\n'));
  EXPECT_GT(s.nmi, 0.25);
  moin::TokenShardReader r(dir / "p/clusters/0/train");
  EXPECT_EQ(r.info().dtype, "uint16");
  EXPECT_EQ(r.vocab_size(), 512);
}

}  // namespace
