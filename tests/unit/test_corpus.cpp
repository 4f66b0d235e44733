#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

#include <set>

#include "moin/core/error.h"
#include "moin/data/corpus.h"
#include "test_util.h"

namespace {

using moin::CorpusOptions;
using moin::CorpusReader;
using moin::Document;
using moin::IssueKind;
using moin::test::TempDir;
using moin::test::write_file;

void write_gz(const std::string& path, const std::string& data) {
  gzFile g = gzopen(path.c_str(), "wb");
  ASSERT_TRUE(g);
  ASSERT_EQ(gzwrite(g, data.data(), static_cast<unsigned>(data.size())), static_cast<int>(data.size()));
  gzclose(g);
}

void write_zst(const std::string& path, const std::string& data) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  std::size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), 3);
  ASSERT_FALSE(ZSTD_isError(n));
  out.resize(n);
  write_file(path, out);
}

std::vector<Document> read_all(const CorpusOptions& o, moin::IngestReport* report = nullptr) {
  CorpusReader r(o);
  std::vector<Document> docs;
  Document d;
  while (r.next(d)) docs.push_back(d);
  if (report) *report = r.report();
  return docs;
}

CorpusOptions opts_for(const std::string& path) {
  CorpusOptions o;
  o.inputs = {path};
  return o;
}

std::string jsonl_lines(int n) {
  std::string s;
  for (int i = 0; i < n; ++i)
    s += "{\"text\": \"document number " + std::to_string(i) + "\", \"meta\": {\"src\": \"s" + std::to_string(i % 3) +
         "\"}}\n";
  return s;
}

TEST(Corpus, ReadsJsonlWithDottedFieldsAndLabels) {
  TempDir dir;
  write_file(dir / "a.jsonl",
             "{\"doc\": {\"body\": \"hello world\"}, \"meta\": {\"pile_set_name\": \"web\", \"id\": 7}}\n"
             "\n"
             "{\"doc\": {\"body\": \"second\\nline\"}, \"meta\": {\"pile_set_name\": \"code\", \"id\": 8}}\r\n");
  CorpusOptions o = opts_for(dir / "a.jsonl");
  o.text_field = "doc.body";
  o.label_field = "meta.pile_set_name";
  o.key_field = "meta.id";
  moin::IngestReport rep;
  auto docs = read_all(o, &rep);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].text, "hello world");
  EXPECT_EQ(docs[0].label, "web");
  EXPECT_EQ(docs[0].key, "7");
  EXPECT_EQ(docs[0].line, 1);
  EXPECT_EQ(docs[1].text, "second\nline");
  EXPECT_EQ(docs[1].label, "code");
  EXPECT_EQ(docs[1].line, 3);  // the blank line is not a record but still a line
  EXPECT_EQ(docs[1].record, 1);
  EXPECT_EQ(docs[1].where(), (dir / "a.jsonl") + ":3");
  EXPECT_EQ(rep.documents, 2);
  EXPECT_EQ(rep.records, 2);
  EXPECT_EQ(rep.files, 1);
  EXPECT_EQ(rep.total_issues(), 0);
  EXPECT_NE(docs[0].split_key(), docs[1].split_key());
}

TEST(Corpus, GzipAndZstdGiveTheSameDocuments) {
  TempDir dir;
  std::string data = jsonl_lines(5000);
  write_file(dir / "p.jsonl", data);
  write_gz(dir / "g.jsonl.gz", data);
  write_zst(dir / "z.jsonl.zst", data);
  auto plain = read_all(opts_for(dir / "p.jsonl"));
  ASSERT_EQ(plain.size(), 5000u);
  for (const char* f : {"g.jsonl.gz", "z.jsonl.zst"}) {
    moin::IngestReport rep;
    auto docs = read_all(opts_for(dir / f), &rep);
    ASSERT_EQ(docs.size(), plain.size()) << f;
    for (std::size_t i = 0; i < docs.size(); i += 97) EXPECT_EQ(docs[i].text, plain[i].text);
    EXPECT_EQ(rep.total_issues(), 0) << rep.summary();
  }
  // A concatenation of two gzip members and of two zstd frames reads as one stream.
  std::string a = jsonl_lines(3), b = "{\"text\": \"tail\"}\n";
  write_gz(dir / "m1.gz", a);
  write_gz(dir / "m2.gz", b);
  write_file(dir / "multi.jsonl.gz", moin::test::read_file(dir / "m1.gz") + moin::test::read_file(dir / "m2.gz"));
  EXPECT_EQ(read_all(opts_for(dir / "multi.jsonl.gz")).size(), 4u);
  write_zst(dir / "f1.zst", a);
  write_zst(dir / "f2.zst", b);
  write_file(dir / "multi.jsonl.zst", moin::test::read_file(dir / "f1.zst") + moin::test::read_file(dir / "f2.zst"));
  EXPECT_EQ(read_all(opts_for(dir / "multi.jsonl.zst")).size(), 4u);
}

TEST(Corpus, RepairUtf8) {
  auto fix = [](std::string s, std::size_t expect_bad) {
    EXPECT_EQ(moin::repair_utf8(s), expect_bad);
    return s;
  };
  const std::string R = "\xEF\xBF\xBD";
  EXPECT_EQ(fix("plain ascii", 0), "plain ascii");
  EXPECT_EQ(fix("caf\xC3\xA9 \xE2\x9C\x93 \xF0\x9F\x98\x80", 0), "caf\xC3\xA9 \xE2\x9C\x93 \xF0\x9F\x98\x80");
  EXPECT_EQ(fix("a\xFF" "b", 1), "a" + R + "b");
  EXPECT_EQ(fix("\xC0\xAF", 2), R + R);                // overlong '/'
  EXPECT_EQ(fix("\xED\xA0\x80", 3), R + R + R);        // UTF-16 surrogate
  EXPECT_EQ(fix("x\xE2\x9C", 2), "x" + R + R);         // truncated 3-byte sequence at the end
  EXPECT_EQ(fix("\xF4\x90\x80\x80", 4), R + R + R + R);  // above U+10FFFF
  EXPECT_EQ(fix("\x80" "ok", 1), R + "ok");            // lone continuation byte
}

// ---- every kind of bad input, in default mode (counted, repaired or skipped) and strict mode (UserError)

struct BadCase {
  const char* name;
  const char* file;          // file name inside the temp dir
  std::string content;       // raw bytes
  IssueKind kind;
  int line;                  // expected line in the example / strict message
  std::size_t docs_default;  // documents read in default mode
};

std::vector<BadCase> bad_cases() {
  std::string good = "{\"text\": \"fine\", \"meta\": {\"l\": \"x\"}}\n";
  std::string big(3000, 'w');
  for (std::size_t i = 100; i < big.size(); i += 100) big[i] = ' ';
  return {
      {"malformed_json", "a.jsonl", good + "{\"text\": \"oops\"\n" + good, IssueKind::malformed_json, 2, 2},
      {"not_an_object", "a.jsonl", good + "[1, 2]\n", IssueKind::not_an_object, 2, 1},
      {"missing_text", "a.jsonl", good + good + "{\"body\": \"x\"}\n", IssueKind::missing_text, 3, 2},
      {"null_text", "a.jsonl", "{\"text\": null}\n" + good, IssueKind::missing_text, 1, 1},
      {"non_string_text", "a.jsonl", good + "{\"text\": 42}\n", IssueKind::non_string_text, 2, 1},
      {"missing_label", "a.jsonl", good + "{\"text\": \"no label\"}\n", IssueKind::missing_label, 2, 2},
      {"invalid_utf8_jsonl", "a.jsonl", good + "{\"text\": \"bad \xFF\xFE byte\"}\n", IssueKind::invalid_utf8, 2, 2},
      {"invalid_utf8_text", "a.txt", "first line\nbad \xC3 byte\n", IssueKind::invalid_utf8, 2, 1},
      {"empty_document", "a.jsonl", good + "{\"text\": \"  \\n\\t \", \"meta\": {\"l\": \"y\"}}\n",
       IssueKind::empty_document, 2, 1},
      {"empty_text_file", "a.txt", "\n\n  \n", IssueKind::empty_document, 1, 0},
      {"long_document", "a.jsonl", good + "{\"text\": \"" + big + "\", \"meta\": {\"l\": 3}}\n",
       IssueKind::long_document, 2, 5},
      {"long_line", "a.jsonl", good + "{\"text\": \"" + std::string(5000, 'x') + "\"}\n" + good,
       IssueKind::long_line, 2, 2},
  };
}

CorpusOptions bad_opts(const std::string& path) {
  CorpusOptions o = opts_for(path);
  o.label_field = "meta.l";
  o.max_doc_bytes = 1000;
  o.max_line_bytes = 4096;
  return o;
}

TEST(CorpusBadInput, DefaultModeCountsRepairsOrSkips) {
  for (const auto& c : bad_cases()) {
    SCOPED_TRACE(c.name);
    TempDir dir;
    std::string path = dir / c.file;
    write_file(path, c.content);
    moin::IngestReport rep;
    std::vector<Document> docs;
    ASSERT_NO_THROW(docs = read_all(bad_opts(path), &rep));
    EXPECT_EQ(docs.size(), c.docs_default) << rep.summary();
    EXPECT_GE(rep.count(c.kind), 1) << rep.summary();
    auto& ex = rep.examples[static_cast<int>(c.kind)];
    ASSERT_FALSE(ex.empty());
    EXPECT_NE(ex[0].find(path + ":" + std::to_string(c.line)), std::string::npos) << ex[0];
    for (const auto& d : docs) {
      std::string copy = d.text;
      EXPECT_EQ(moin::repair_utf8(copy), 0u) << "documents are valid UTF-8";
      EXPECT_LE(d.text.size(), 1000u);
    }
    // The JSON form carries the same counts.
    auto j = rep.to_json();
    EXPECT_EQ(j["issues"][moin::issue_name(c.kind)]["count"], rep.count(c.kind));
    EXPECT_EQ(moin::IngestReport::from_json(j).count(c.kind), rep.count(c.kind));
  }
}

TEST(CorpusBadInput, StrictModeStopsAtTheFirstWithFileAndLine) {
  for (const auto& c : bad_cases()) {
    SCOPED_TRACE(c.name);
    TempDir dir;
    std::string path = dir / c.file;
    write_file(path, c.content);
    CorpusOptions o = bad_opts(path);
    o.strict = true;
    try {
      read_all(o);
      ADD_FAILURE() << "no error";
    } catch (const moin::UserError& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(path + ":" + std::to_string(c.line)), std::string::npos) << msg;
      EXPECT_NE(msg.find(moin::issue_name(c.kind)), std::string::npos) << msg;
    }
  }
}

TEST(CorpusBadInput, RepairedTextKeepsTheGoodBytes) {
  TempDir dir;
  write_file(dir / "a.jsonl", "{\"text\": \"caf\xC3\xA9 \xFF!\"}\n");
  moin::IngestReport rep;
  auto docs = read_all(opts_for(dir / "a.jsonl"), &rep);
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(docs[0].text, "caf\xC3\xA9 \xEF\xBF\xBD!");
  EXPECT_EQ(rep.count(IssueKind::invalid_utf8), 1);
}

TEST(CorpusBadInput, TenMegabyteDocumentIsSplitOrTruncated) {
  TempDir dir;
  std::string big;
  big.reserve(10 << 20);
  while (big.size() < (10u << 20)) big += "word\xC3\xA9 ";  // multibyte characters at every boundary
  write_file(dir / "big.jsonl", "{\"text\": \"" + big + "\"}\n{\"text\": \"small\"}\n");
  CorpusOptions o = opts_for(dir / "big.jsonl");
  o.max_doc_bytes = 1 << 20;
  moin::IngestReport rep;
  auto docs = read_all(o, &rep);
  ASSERT_GE(docs.size(), 11u);
  std::string joined;
  for (std::size_t i = 0; i + 1 < docs.size(); ++i) {
    EXPECT_LE(docs[i].text.size(), 1u << 20);
    EXPECT_EQ(docs[i].part, static_cast<int>(i));
    EXPECT_EQ(docs[i].line, 1);
    joined += docs[i].text;
  }
  EXPECT_EQ(joined, big) << "split loses nothing";
  EXPECT_EQ(docs.back().text, "small");
  EXPECT_EQ(rep.count(IssueKind::long_document), 1);
  EXPECT_NE(docs[0].split_key(), docs[1].split_key());

  o.long_docs = "truncate";
  docs = read_all(o, &rep);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_LE(docs[0].text.size(), 1u << 20);
  EXPECT_EQ(big.compare(0, docs[0].text.size(), docs[0].text), 0);
  EXPECT_EQ(rep.count(IssueKind::long_document), 1);

  // A 10 MB plain-text file (one document per file) is cut into pieces as it is read.
  write_file(dir / "big.txt", big);
  o = opts_for(dir / "big.txt");
  o.max_doc_bytes = 1 << 20;
  docs = read_all(o, &rep);
  joined.clear();
  for (const auto& d : docs) {
    EXPECT_LE(d.text.size(), 1u << 20);
    joined += d.text;
  }
  EXPECT_EQ(joined, big + "\n");
  EXPECT_EQ(rep.count(IssueKind::long_document), 1);
}

void truncated_stream_case(const std::string& name, bool zstd) {
  TempDir dir;
  std::string data = jsonl_lines(20000);
  std::string full = dir / ("full" + name);
  if (zstd) write_zst(full, data);
  else write_gz(full, data);
  std::string bytes = moin::test::read_file(full);
  std::string cut = dir / ("cut" + name);
  write_file(cut, bytes.substr(0, bytes.size() / 2));

  moin::IngestReport rep;
  std::vector<Document> docs;
  ASSERT_NO_THROW(docs = read_all(opts_for(cut), &rep));
  EXPECT_EQ(rep.count(IssueKind::truncated_file), 1) << rep.summary();
  EXPECT_GT(docs.size(), 1000u);
  EXPECT_LT(docs.size(), 20000u);
  for (std::size_t i = 0; i < docs.size(); ++i) ASSERT_EQ(docs[i].text, "document number " + std::to_string(i));

  CorpusOptions o = opts_for(cut);
  o.strict = true;
  try {
    read_all(o);
    ADD_FAILURE() << "no error";
  } catch (const moin::UserError& e) {
    std::string msg = e.what();
    // The cut usually splits a line: either the partial last line or the truncation itself is reported.
    EXPECT_NE(msg.find(cut + ":"), std::string::npos) << msg;
    EXPECT_TRUE(msg.find("truncated_file") != std::string::npos || msg.find("malformed_json") != std::string::npos)
        << msg;
  }
}

TEST(CorpusBadInput, TruncatedGzipKeepsWhatWasRead) { truncated_stream_case(".jsonl.gz", false); }
TEST(CorpusBadInput, TruncatedZstdKeepsWhatWasRead) { truncated_stream_case(".jsonl.zst", true); }

TEST(CorpusBadInput, CorruptCompressedFileIsCountedAndSkipped) {
  TempDir dir;
  write_file(dir / "a.jsonl", jsonl_lines(3));
  write_file(dir / "b.jsonl.gz", std::string("\x1f\x8b\x08\x00garbage garbage garbage garbage", 36));
  write_file(dir / "c.jsonl.zst", std::string("\x28\xb5\x2f\xfdgarbage garbage garbage", 27));
  CorpusOptions o;
  o.inputs = {dir.path.string()};
  moin::IngestReport rep;
  auto docs = read_all(o, &rep);
  EXPECT_EQ(docs.size(), 3u);
  EXPECT_EQ(rep.count(IssueKind::unreadable_file) + rep.count(IssueKind::truncated_file), 2) << rep.summary();
  o.strict = true;
  EXPECT_THROW(read_all(o), moin::UserError);
}

TEST(Corpus, PlainTextByFileOrParagraph) {
  TempDir dir;
  write_file(dir / "t.txt", "para one\nstill one\n\n\n  \npara two\n\npara three");
  moin::IngestReport rep;
  auto docs = read_all(opts_for(dir / "t.txt"), &rep);
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(docs[0].text, "para one\nstill one\n\n\n  \npara two\n\npara three\n");
  CorpusOptions o = opts_for(dir / "t.txt");
  o.text_unit = "paragraph";
  docs = read_all(o, &rep);
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0].text, "para one\nstill one\n");
  EXPECT_EQ(docs[1].text, "para two\n");
  EXPECT_EQ(docs[1].line, 6);
  EXPECT_EQ(docs[2].text, "para three\n");
  EXPECT_EQ(docs[2].line, 8);
  EXPECT_EQ(rep.records, 3);
  // format=jsonl forces JSON parsing whatever the extension.
  write_file(dir / "x.data", "{\"text\": \"j\"}\n");
  o = opts_for(dir / "x.data");
  EXPECT_EQ(read_all(o)[0].text, "{\"text\": \"j\"}\n");
  o.format = "jsonl";
  EXPECT_EQ(read_all(o)[0].text, "j");
}

TEST(Corpus, FoldersGlobsAndMissingInputs) {
  TempDir dir;
  std::filesystem::create_directories(dir.path / "sub/deeper");
  std::filesystem::create_directories(dir.path / ".hidden");
  write_file(dir / "sub/b.jsonl", jsonl_lines(2));
  write_file(dir / "sub/deeper/a.txt", "text doc");
  write_file(dir / "sub/notes.bin", "ignored");
  write_file(dir / ".hidden/c.jsonl", jsonl_lines(5));
  write_gz(dir / "sub/z.jsonl.gz", jsonl_lines(1));
  auto files = moin::resolve_corpus_inputs({dir / "sub"});
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(files[0].second, "b.jsonl");
  EXPECT_EQ(files[1].second, "deeper/a.txt");
  EXPECT_EQ(files[2].second, "z.jsonl.gz");
  CorpusOptions o;
  o.inputs = {dir / "sub"};
  EXPECT_EQ(read_all(o).size(), 4u);

  files = moin::resolve_corpus_inputs({dir / "sub/*.jsonl*"});
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].second, "b.jsonl");
  EXPECT_THROW(moin::resolve_corpus_inputs({dir / "nothing*.jsonl"}), moin::UserError);
  EXPECT_THROW(moin::resolve_corpus_inputs({dir / "missing.jsonl"}), moin::UserError);
  EXPECT_THROW(moin::resolve_corpus_inputs({}), moin::UserError);
  o.format = "yaml";
  EXPECT_THROW(CorpusReader r(o), moin::UserError);
}

TEST(Corpus, ShardsPartitionTheRecordsAndTheReport) {
  TempDir dir;
  write_file(dir / "a.jsonl", jsonl_lines(50) + "not json\n");
  write_file(dir / "b.txt", "p1\n\np2\n\np3\n");
  write_file(dir / "c.txt", "whole file");
  std::string data = jsonl_lines(30);
  write_gz(dir / "d.jsonl.gz", data);
  std::string gz = moin::test::read_file(dir / "d.jsonl.gz");
  write_file(dir / "d.jsonl.gz", gz.substr(0, gz.size() - 10));  // truncated: a file-level issue
  CorpusOptions o;
  o.inputs = {dir.path.string()};
  moin::IngestReport full;
  auto all = read_all(o, &full);
  std::set<std::string> want;
  for (const auto& d : all) want.insert(d.split_key() + "=" + d.text);
  for (int n : {2, 3, 7}) {
    std::set<std::string> got;
    moin::IngestReport sum;
    for (int s = 0; s < n; ++s) {
      CorpusReader r(o);
      r.set_shard(s, n);
      Document d;
      std::int64_t last = -1;
      while (r.next(d)) {
        EXPECT_EQ(d.ordinal % n, s);
        EXPECT_GE(d.ordinal, last);
        last = d.ordinal;
        EXPECT_TRUE(got.insert(d.split_key() + "=" + d.text).second);
      }
      sum.merge(r.report());
    }
    EXPECT_EQ(got, want) << n;
    EXPECT_EQ(sum.documents, full.documents);
    EXPECT_EQ(sum.records, full.records);
    EXPECT_EQ(sum.files, full.files);
    EXPECT_EQ(sum.total_issues(), full.total_issues()) << sum.summary() << " vs " << full.summary();
  }
}

TEST(Corpus, WriteAsLinesForTheTokenizerTrainer) {
  TempDir dir;
  write_file(dir / "a.jsonl", "{\"text\": \"one\\n\\n two\"}\n{\"text\": \"three\"}\n");
  auto rep = moin::write_corpus_as_lines(opts_for(dir / "a.jsonl"), dir / "out.txt");
  EXPECT_EQ(moin::test::read_file(dir / "out.txt"), "one\n two\nthree\n");
  EXPECT_EQ(rep.documents, 2);
}

TEST(Corpus, SharedCorpusReadsClean) {
  MOIN_REQUIRE_SHARED_DATA(data);
  CorpusOptions o = opts_for(data + "/corpus/valid.jsonl");
  o.label_field = "meta.pile_set_name";
  o.strict = true;
  moin::IngestReport rep;
  auto docs = read_all(o, &rep);
  std::string raw = moin::test::read_file(data + "/corpus/valid.jsonl");
  EXPECT_EQ(docs.size(), static_cast<std::size_t>(std::count(raw.begin(), raw.end(), '\n')));
  EXPECT_GT(docs.size(), 2000u);
  std::set<std::string> labels;
  for (const auto& d : docs) labels.insert(d.label);
  EXPECT_EQ(labels.size(), 10u);
}

}  // namespace
