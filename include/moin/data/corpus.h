// Corpus ingestion: a streaming reader of documents from JSONL (.jsonl, .jsonl.gz, .jsonl.zst) and plain
// text files, given as files, folders (recursive) or globs.
//
// Memory does not grow with the corpus: files are decompressed and read line by line; only the current
// document is held (a JSONL line is capped at max_line_bytes, a text document is cut into pieces of at
// most max_doc_bytes as it is read).
//
// Bad input never stops a run silently or crashes it. Each problem is one IssueKind; by default it is
// counted in the IngestReport (with the first few file:line examples) and the document is repaired
// (invalid UTF-8 -> U+FFFD, a long document split or truncated) or skipped (malformed JSON, no text,
// empty). With strict = true the first problem throws a UserError naming file:line. Nothing is dropped
// without being counted.
#pragma once
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "moin/core/error.h"

namespace moin {

struct CorpusOptions {
  std::vector<std::string> inputs;  // files, folders (recursive), globs (* ? [..], no **)
  std::string format = "auto";      // auto (by extension), jsonl, text
  std::string text_field = "text";  // dotted path in each JSON object
  std::string label_field;          // dotted path, optional ("" = no labels)
  std::string key_field;            // dotted path of a document id, optional (default: file:line)
  std::string text_unit = "file";   // text files: "file" (one document per file) or "paragraph" (blank lines)
  std::int64_t max_doc_bytes = 1 << 20;
  std::string long_docs = "split";  // split or truncate
  std::int64_t max_line_bytes = 64 << 20;
  bool strict = false;
  int max_examples = 5;

  template <class V> void visit(V& v) {
    v("inputs", inputs, "corpus files, folders (read recursively) or globs; .gz and .zst are decompressed");
    v("format", format, "auto (.jsonl/.json/.ndjson = JSONL, anything else = text), jsonl or text");
    v("text_field", text_field, "JSONL: dotted path of the document text (e.g. text, doc.body)");
    v("label_field", label_field, "JSONL: dotted path of a reference label, for reports (e.g. meta.pile_set_name)");
    v("key_field", key_field, "JSONL: dotted path of a document id for the train/valid split (default: file:line)");
    v("text_unit", text_unit, "text files: file (one document per file) or paragraph (split at blank lines)");
    v("max_doc_bytes", max_doc_bytes, "documents longer than this (bytes) are split or truncated (counted)");
    v("long_docs", long_docs, "split (into pieces of at most max_doc_bytes) or truncate");
    v("max_line_bytes", max_line_bytes, "JSONL lines longer than this are skipped unread (counted)");
    v("strict", strict, "stop at the first bad input (UserError naming file:line) instead of counting it");
    v("max_examples", max_examples, "file:line examples kept per kind of problem in the ingest report");
  }
  void validate() const;
};

// The kinds of bad input, each counted separately.
enum class IssueKind {
  unreadable_file,   // cannot open, or not a valid .gz/.zst stream (file skipped from there on)
  truncated_file,    // a .gz/.zst stream ends early (what was read before is kept)
  malformed_json,    // a JSONL line that does not parse (skipped)
  not_an_object,     // a JSONL line that is valid JSON but not an object (skipped)
  missing_text,      // text_field absent or null (skipped)
  non_string_text,   // text_field present but not a string (skipped)
  missing_label,     // label_field absent (document kept, label "")
  invalid_utf8,      // invalid UTF-8 byte sequences (repaired: each replaced by U+FFFD)
  empty_document,    // only whitespace (skipped)
  long_document,     // longer than max_doc_bytes (split or truncated)
  long_line,         // a JSONL line longer than max_line_bytes (skipped)
};
constexpr int kNumIssueKinds = 11;
const char* issue_name(IssueKind k);
// Whether the document is dropped (true) or kept after repair (false) for this kind.
bool issue_drops_document(IssueKind k);

// What ingestion saw: totals, a count per kind of problem and the first few file:line examples.
struct IngestReport {
  std::int64_t files = 0;
  std::int64_t records = 0;    // JSONL lines (non-blank), text paragraphs or text files read
  std::int64_t documents = 0;  // documents produced (a split long document counts each piece)
  std::int64_t bytes = 0;      // text bytes produced
  std::array<std::int64_t, kNumIssueKinds> counts{};
  std::array<std::vector<std::string>, kNumIssueKinds> examples;
  int max_examples = 5;

  std::int64_t count(IssueKind k) const { return counts[static_cast<int>(k)]; }
  std::int64_t total_issues() const;
  void add(IssueKind k, const std::string& where, const std::string& detail);
  void merge(const IngestReport& other);
  nlohmann::json to_json() const;
  static IngestReport from_json(const nlohmann::json& j);
  std::string summary() const;  // one line for the log
};

// One document as read.
struct Document {
  std::string text;          // valid UTF-8, non-empty
  std::string label;         // "" when no label_field or it is missing
  std::string key;           // key_field's value, or "" (see split_key())
  std::string source;        // the file, as found from the input
  std::string relative_source;  // source relative to the input argument that found it
  std::int32_t file_index = 0;  // index in CorpusReader::files()
  std::int64_t line = 0;     // 1-based first line of the record (JSONL line, paragraph start; 1 for a file)
  std::int64_t record = 0;   // 0-based index of the record within its file
  std::int32_t part = 0;     // piece index when a long document was split
  std::int64_t ordinal = 0;  // 0-based index of the record over the whole corpus (sharding unit)

  std::string where() const { return source + ":" + std::to_string(line); }
  // The identity hashed for the train/valid split: key_field's value when given, else the file's path
  // relative to its input plus the record index; plus the piece index. Stable across machines and shards.
  std::string split_key() const;
};

// The files the inputs name, in a deterministic order: inputs in the order given; a folder's files sorted
// (recursively; hidden files and files whose extension is not a corpus one are skipped); a glob's matches
// sorted. UserError when an input matches nothing. Each entry: {path, path relative to its input}.
std::vector<std::pair<std::string, std::string>> resolve_corpus_inputs(const std::vector<std::string>& inputs);

// Decompressed bytes of a plain, gzip or zstd file (sniffed from the magic bytes), read in chunks.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Up to n bytes into buf; 0 at the end. Sets error() (and returns 0) on a corrupt or truncated stream.
  virtual std::size_t read(char* buf, std::size_t n) = 0;
  const std::string& error() const { return error_; }
  bool truncated() const { return truncated_; }  // the error is an early end of a compressed stream

 protected:
  std::string error_;
  bool truncated_ = false;
};
// UserError when the file cannot be opened.
std::unique_ptr<ByteSource> open_byte_source(const std::string& path);

// The value at a dotted path ("meta.topic") of a JSON object, or null when a step is missing: how every
// *_field option is read.
const nlohmann::json* json_path(const nlohmann::json& obj, const std::string& dotted);

// Replaces every invalid UTF-8 sequence of s by U+FFFD (in place); returns how many were replaced.
std::size_t repair_utf8(std::string& s);

// Streams the documents of a corpus. Single-threaded; consumers batch documents for parallel work.
class CorpusReader {
 public:
  explicit CorpusReader(const CorpusOptions& opts);
  ~CorpusReader();
  CorpusReader(const CorpusReader&) = delete;
  CorpusReader& operator=(const CorpusReader&) = delete;

  // The next document; false at the end of the corpus. In strict mode throws UserError at bad input.
  bool next(Document& doc);
  // Reads only slice `shard` of `num_shards`: the records whose corpus ordinal % num_shards == shard
  // (the others are line-split but neither parsed nor reported), and reports file-level problems only
  // for files whose index % num_shards == shard, so the reports of all slices add up to one full read.
  // Call before the first next().
  void set_shard(int shard, int num_shards);

  const IngestReport& report() const { return report_; }
  const std::vector<std::pair<std::string, std::string>>& files() const { return files_; }

 private:
  struct State;
  std::unique_ptr<State> st_;
  CorpusOptions opts_;
  std::vector<std::pair<std::string, std::string>> files_;
  IngestReport report_;
};

// Writes every non-blank line of every document to `path` (one per line): the input the SentencePiece
// trainer reads (it treats a line as a sentence and skips very long ones). Returns the ingest report.
IngestReport write_corpus_as_lines(const CorpusOptions& opts, const std::string& path);

// Whether a file name says JSONL: .jsonl, .json or .ndjson, optionally followed by .gz, .zst or .zstd.
bool is_jsonl_path(const std::string& path);

}  // namespace moin
