#include "moin/data/corpus.h"
#include "moin/core/json.h"

#include <glob.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>

#include "moin/core/fs.h"
#include "moin/core/strings.h"

namespace moin {

namespace stdfs = std::filesystem;
using json = nlohmann::json;

void CorpusOptions::validate() const {
  require(format == "auto" || format == "jsonl" || format == "text",
          "corpus format must be auto, jsonl or text (got \"" + format + "\")");
  require(!text_field.empty(), "text_field must not be empty");
  require(text_unit == "file" || text_unit == "paragraph",
          "text_unit must be file or paragraph (got \"" + text_unit + "\")");
  require(long_docs == "split" || long_docs == "truncate",
          "long_docs must be split or truncate (got \"" + long_docs + "\")");
  require(max_doc_bytes >= 16, "max_doc_bytes must be at least 16");
  require(max_line_bytes >= 16, "max_line_bytes must be at least 16");
  require(max_examples >= 0, "max_examples must be >= 0");
}

// ------------------------------------------------------------------------------------------- report

static const char* const kIssueNames[kNumIssueKinds] = {
    "unreadable_file", "truncated_file", "malformed_json", "not_an_object", "missing_text", "non_string_text",
    "missing_label",   "invalid_utf8",   "empty_document", "long_document", "long_line"};

const char* issue_name(IssueKind k) { return kIssueNames[static_cast<int>(k)]; }

bool issue_drops_document(IssueKind k) {
  switch (k) {
    case IssueKind::malformed_json:
    case IssueKind::not_an_object:
    case IssueKind::missing_text:
    case IssueKind::non_string_text:
    case IssueKind::empty_document:
    case IssueKind::long_line:
      return true;
    default:
      return false;
  }
}

std::int64_t IngestReport::total_issues() const {
  std::int64_t t = 0;
  for (auto c : counts) t += c;
  return t;
}

void IngestReport::add(IssueKind k, const std::string& where, const std::string& detail) {
  int i = static_cast<int>(k);
  ++counts[i];
  if (static_cast<int>(examples[i].size()) >= max_examples) return;
  // An example quotes the input (a parser's "last read" bytes, a file name): reports are JSON, which
  // must be valid UTF-8, or writing the report fails the whole run.
  std::string example = where + ": " + detail;
  repair_utf8(example);
  examples[i].push_back(std::move(example));
}

void IngestReport::merge(const IngestReport& o) {
  files += o.files;
  records += o.records;
  documents += o.documents;
  bytes += o.bytes;
  for (int i = 0; i < kNumIssueKinds; ++i) {
    counts[i] += o.counts[i];
    for (const auto& e : o.examples[i])
      if (static_cast<int>(examples[i].size()) < max_examples) examples[i].push_back(e);
  }
}

json IngestReport::to_json() const {
  json issues = json::object();
  for (int i = 0; i < kNumIssueKinds; ++i)
    issues[kIssueNames[i]] = {{"count", counts[i]},
                              {"action", issue_drops_document(static_cast<IssueKind>(i)) ? "skipped" : "kept"},
                              {"examples", examples[i]}};
  return {{"files", files}, {"records", records}, {"documents", documents}, {"bytes", bytes}, {"issues", issues}};
}

IngestReport IngestReport::from_json(const json& j) {
  IngestReport r;
  r.files = j.value("files", std::int64_t{0});
  r.records = j.value("records", std::int64_t{0});
  r.documents = j.value("documents", std::int64_t{0});
  r.bytes = j.value("bytes", std::int64_t{0});
  if (j.contains("issues"))
    for (int i = 0; i < kNumIssueKinds; ++i) {
      if (!j["issues"].contains(kIssueNames[i])) continue;
      const auto& e = j["issues"][kIssueNames[i]];
      r.counts[i] = e.value("count", std::int64_t{0});
      r.examples[i] = e.value("examples", std::vector<std::string>{});
    }
  return r;
}

std::string IngestReport::summary() const {
  std::string s = std::to_string(files) + " files, " + std::to_string(records) + " records, " +
                  std::to_string(documents) + " documents, " + human_bytes(static_cast<double>(bytes));
  std::vector<std::string> parts;
  for (int i = 0; i < kNumIssueKinds; ++i)
    if (counts[i]) parts.push_back(std::string(kIssueNames[i]) + " " + std::to_string(counts[i]));
  s += parts.empty() ? "; no bad input" : "; bad input: " + join(parts, ", ");
  return s;
}

std::string Document::split_key() const {
  return (key.empty() ? relative_source + "#" + std::to_string(record) : "key:" + key) + "/" + std::to_string(part);
}

// ------------------------------------------------------------------------------------------- utf-8

std::size_t repair_utf8(std::string& s) {
  auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  // Fast path: most text is valid.
  std::size_t i = 0, bad = 0;
  std::string out;
  bool copying = false;
  while (i < n) {
    unsigned char c = p[i];
    std::size_t len = 0;
    if (c < 0x80) {
      len = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      if (i + 1 < n && (p[i + 1] & 0xC0) == 0x80) len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      // Overlongs (E0 < A0) and surrogates (ED >= A0) are invalid.
      unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
      if (i + 2 < n && p[i + 1] >= lo && p[i + 1] <= hi && (p[i + 2] & 0xC0) == 0x80) len = 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
      unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
      if (i + 3 < n && p[i + 1] >= lo && p[i + 1] <= hi && (p[i + 2] & 0xC0) == 0x80 && (p[i + 3] & 0xC0) == 0x80)
        len = 4;
    }
    if (len == 0) {
      if (!copying) {
        out.reserve(n + 16);
        out.assign(s, 0, i);
        copying = true;
      }
      out += "\xEF\xBF\xBD";  // U+FFFD, one per invalid byte
      ++bad;
      ++i;
    } else {
      if (copying) out.append(s, i, len);
      i += len;
    }
  }
  if (copying) s.swap(out);
  return bad;
}

static bool is_blank(const std::string& s) {
  for (unsigned char c : s)
    if (!(c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v')) return false;
  return true;
}

// Cuts s (valid UTF-8) into pieces of at most max bytes, at character boundaries, preferring the last
// newline, then the last space, in the second half of each window.
static std::vector<std::string> split_text(const std::string& s, std::size_t max) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (s.size() - start > max) {
    std::size_t end = start + max;
    while (end > start && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;  // char boundary
    std::size_t half = start + max / 2;
    std::size_t cut = s.rfind('\n', end - 1);
    if (cut == std::string::npos || cut < half) cut = s.rfind(' ', end - 1);
    if (cut == std::string::npos || cut < half) cut = end;
    else cut += 1;  // keep the separator with the left piece
    out.push_back(s.substr(start, cut - start));
    start = cut;
  }
  out.push_back(s.substr(start));
  return out;
}

// ------------------------------------------------------------------------------------------- byte sources

namespace {

class PlainSource : public ByteSource {
 public:
  explicit PlainSource(std::FILE* f) : f_(f) {}
  ~PlainSource() override { std::fclose(f_); }
  std::size_t read(char* buf, std::size_t n) override {
    std::size_t got = std::fread(buf, 1, n, f_);
    if (got == 0 && std::ferror(f_)) error_ = std::strerror(errno);
    return got;
  }

 private:
  std::FILE* f_;
};

class GzSource : public ByteSource {
 public:
  explicit GzSource(gzFile g) : g_(g) {}
  ~GzSource() override { gzclose(g_); }
  std::size_t read(char* buf, std::size_t n) override {
    if (!error_.empty()) return 0;
    int got = gzread(g_, buf, static_cast<unsigned>(std::min<std::size_t>(n, 1u << 30)));
    int err = Z_OK;
    const char* msg = gzerror(g_, &err);
    if (got < 0 || (err != Z_OK && err != Z_STREAM_END)) {
      // zlib reports a stream cut short as Z_BUF_ERROR ("unexpected end of file").
      truncated_ = err == Z_BUF_ERROR;
      error_ = truncated_ ? "gzip stream ends early (truncated file)" : std::string("gzip: ") + (msg ? msg : "error");
      return got > 0 ? static_cast<std::size_t>(got) : 0;
    }
    return static_cast<std::size_t>(got);
  }

 private:
  gzFile g_;
};

class ZstdSource : public ByteSource {
 public:
  explicit ZstdSource(std::FILE* f) : f_(f), ctx_(ZSTD_createDCtx()), in_buf_(ZSTD_DStreamInSize()) {
    in_ = {in_buf_.data(), 0, 0};
  }
  ~ZstdSource() override {
    ZSTD_freeDCtx(ctx_);
    std::fclose(f_);
  }
  std::size_t read(char* buf, std::size_t n) override {
    if (!error_.empty() || done_) return 0;
    ZSTD_outBuffer out{buf, n, 0};
    while (out.pos == 0) {
      if (in_.pos == in_.size) {
        in_.size = std::fread(in_buf_.data(), 1, in_buf_.size(), f_);
        in_.pos = 0;
        if (in_.size == 0) {
          done_ = true;
          // The last call's return is 0 exactly when a frame was completely decoded and flushed.
          if (last_ != 0) {
            truncated_ = true;
            error_ = "zstd stream ends early (truncated file)";
          }
          return 0;
        }
      }
      std::size_t r = ZSTD_decompressStream(ctx_, &out, &in_);
      if (ZSTD_isError(r)) {
        error_ = std::string("zstd: ") + ZSTD_getErrorName(r);
        return out.pos;
      }
      last_ = r;
    }
    return out.pos;
  }

 private:
  std::FILE* f_;
  ZSTD_DCtx* ctx_;
  std::vector<char> in_buf_;
  ZSTD_inBuffer in_;
  std::size_t last_ = 0;
  bool done_ = false;
};

}  // namespace

std::unique_ptr<ByteSource> open_byte_source(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw UserError("cannot open " + path + ": " + std::strerror(errno));
  unsigned char magic[4] = {0, 0, 0, 0};
  std::size_t got = std::fread(magic, 1, 4, f);
  std::rewind(f);
  if (got >= 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
    std::fclose(f);
    gzFile g = gzopen(path.c_str(), "rb");
    if (!g) throw UserError("cannot open " + path);
    gzbuffer(g, 1 << 17);
    return std::make_unique<GzSource>(g);
  }
  if (got == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd)
    return std::make_unique<ZstdSource>(f);
  return std::make_unique<PlainSource>(f);
}

// ------------------------------------------------------------------------------------------- inputs

static std::string strip_compression(const std::string& name) {
  for (const char* ext : {".gz", ".zst", ".zstd"})
    if (ends_with(name, ext)) return name.substr(0, name.size() - std::strlen(ext));
  return name;
}

static bool is_jsonl_name(const std::string& name) {
  std::string n = strip_compression(name);
  return ends_with(n, ".jsonl") || ends_with(n, ".json") || ends_with(n, ".ndjson");
}

static bool is_corpus_name(const std::string& name) {
  std::string n = strip_compression(name);
  return is_jsonl_name(name) || ends_with(n, ".txt") || ends_with(n, ".text") || ends_with(n, ".md");
}

static void add_folder(const stdfs::path& dir, std::vector<std::pair<std::string, std::string>>& out) {
  std::vector<stdfs::path> found;
  std::error_code ec;
  for (auto it = stdfs::recursive_directory_iterator(dir, stdfs::directory_options::follow_directory_symlink, ec);
       it != stdfs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    std::string name = it->path().filename().string();
    if (!name.empty() && name[0] == '.') {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file() && is_corpus_name(name)) found.push_back(it->path());
  }
  if (ec) throw UserError("cannot read folder " + dir.string() + ": " + ec.message());
  std::sort(found.begin(), found.end());
  for (const auto& p : found) out.emplace_back(p.string(), stdfs::relative(p, dir).string());
}

std::vector<std::pair<std::string, std::string>> resolve_corpus_inputs(const std::vector<std::string>& inputs) {
  require(!inputs.empty(), "no corpus input given (--input PATH)");
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& in : inputs) {
    std::size_t before = out.size();
    if (in.find_first_of("*?[") != std::string::npos) {
      glob_t g{};
      int rc = ::glob(in.c_str(), 0, nullptr, &g);
      std::vector<std::string> matches;
      if (rc == 0)
        for (std::size_t i = 0; i < g.gl_pathc; ++i) matches.emplace_back(g.gl_pathv[i]);
      ::globfree(&g);
      std::sort(matches.begin(), matches.end());
      // Relative to the pattern's folder prefix (the part before the first wildcard component).
      std::string prefix = in.substr(0, in.find_first_of("*?["));
      prefix = prefix.substr(0, prefix.rfind('/') == std::string::npos ? 0 : prefix.rfind('/') + 1);
      for (const auto& m : matches) {
        if (stdfs::is_directory(m)) add_folder(m, out);
        else out.emplace_back(m, m.substr(prefix.size()));
      }
    } else if (stdfs::is_directory(in)) {
      add_folder(in, out);
    } else if (stdfs::exists(in)) {
      out.emplace_back(in, stdfs::path(in).filename().string());
    } else {
      throw UserError("corpus input " + in + " does not exist");
    }
    if (out.size() == before) throw UserError("corpus input " + in + " matches no corpus file");
  }
  return out;
}

// ------------------------------------------------------------------------------------------- reader

namespace {

// Lines of a byte source; a line longer than max is skipped (reported through `too_long`).
class LineReader {
 public:
  LineReader(ByteSource& src, std::size_t max) : src_(src), max_(max), buf_(1 << 17) {}

  // false at the end. too_long: the line exceeded max and was discarded (line is empty).
  bool next(std::string& line, bool& too_long) {
    line.clear();
    too_long = false;
    bool any = false;
    for (;;) {
      if (pos_ == len_) {
        len_ = src_.read(buf_.data(), buf_.size());
        pos_ = 0;
        if (len_ == 0) return any;
      }
      any = true;
      const char* start = buf_.data() + pos_;
      const char* nl = static_cast<const char*>(std::memchr(start, '\n', len_ - pos_));
      std::size_t take = nl ? static_cast<std::size_t>(nl - start) : len_ - pos_;
      if (!too_long) {
        if (line.size() + take > max_) {
          too_long = true;
          line.clear();
          line.shrink_to_fit();
        } else {
          line.append(start, take);
        }
      }
      pos_ += take;
      if (nl) {
        ++pos_;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return true;
      }
    }
  }

 private:
  ByteSource& src_;
  std::size_t max_;
  std::vector<char> buf_;
  std::size_t pos_ = 0, len_ = 0;
};

std::string scalar_text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

}  // namespace

struct CorpusReader::State {
  int shard = 0, num_shards = 1;
  std::size_t file = 0;  // index of the next file to open
  bool in_file = false;
  std::unique_ptr<ByteSource> src;
  std::unique_ptr<LineReader> lines;
  bool jsonl = true;
  std::int64_t line_no = 0;   // lines read in the current file
  std::int64_t record = 0;    // records started in the current file
  std::int64_t ordinal = 0;   // records started in the corpus
  std::deque<Document> pending;
  std::string line;
  // The document being assembled from text lines.
  std::string text;
  std::int32_t part = 0;            // pieces queued so far (text_unit file)
  bool long_reported = false;
  bool file_owner = true;           // this shard reports the current file's file-level problems
  std::int64_t file_ordinal = 0;    // ordinal of the current file (text_unit file)
  bool in_para = false, para_mine = false;
  std::int64_t para_line = 0, para_record = 0, para_ordinal = 0;
};

CorpusReader::CorpusReader(const CorpusOptions& opts) : st_(std::make_unique<State>()), opts_(opts) {
  opts_.validate();
  files_ = resolve_corpus_inputs(opts_.inputs);
  report_.max_examples = opts_.max_examples;
}

CorpusReader::~CorpusReader() = default;

void CorpusReader::set_shard(int shard, int num_shards) {
  require(num_shards >= 1 && shard >= 0 && shard < num_shards,
          "shard " + std::to_string(shard) + " of " + std::to_string(num_shards) + " is out of range");
  st_->shard = shard;
  st_->num_shards = num_shards;
}

bool CorpusReader::next(Document& doc) {
  State& s = *st_;
  const bool strict = opts_.strict;
  const auto max_doc = static_cast<std::size_t>(opts_.max_doc_bytes);

  auto mine_file = [&](std::size_t f) { return static_cast<int>(f % s.num_shards) == s.shard; };
  auto mine_record = [&](std::int64_t ordinal) { return static_cast<int>(ordinal % s.num_shards) == s.shard; };
  auto issue = [&](IssueKind k, const std::string& where, const std::string& detail) {
    if (strict) throw UserError(where + ": " + issue_name(k) + ": " + detail);
    report_.add(k, where, detail);
  };
  auto where_line = [&](std::int64_t line) { return files_[s.file - 1].first + ":" + std::to_string(line); };
  auto repair = [&](std::string& text, std::int64_t line) {
    if (std::size_t bad = repair_utf8(text))
      issue(IssueKind::invalid_utf8, where_line(line), std::to_string(bad) + " invalid UTF-8 bytes replaced by U+FFFD");
  };
  // Queues one piece of a document (valid UTF-8).
  auto queue = [&](std::string&& text, const std::string& label, const std::string& key, std::int64_t line,
                   std::int64_t record, std::int64_t ordinal, std::int32_t part) {
    const auto& f = files_[s.file - 1];
    Document d;
    d.text = std::move(text);
    d.label = label;
    d.key = key;
    d.source = f.first;
    d.relative_source = f.second;
    d.file_index = static_cast<std::int32_t>(s.file - 1);
    d.line = line;
    d.record = record;
    d.part = part;
    d.ordinal = ordinal;
    report_.documents += 1;
    report_.bytes += static_cast<std::int64_t>(d.text.size());
    s.pending.push_back(std::move(d));
  };
  auto long_issue = [&](std::size_t size, std::int64_t line) {
    issue(IssueKind::long_document, where_line(line),
          (size > max_doc ? std::to_string(size) + " bytes" : std::string("longer")) + " > max_doc_bytes " +
              std::to_string(max_doc) + (opts_.long_docs == "split" ? ": split" : ": truncated"));
  };
  // Queues a whole document: skipped when blank, split or truncated when long.
  auto emit = [&](std::string&& text, const std::string& label, const std::string& key, std::int64_t line,
                  std::int64_t record, std::int64_t ordinal) {
    if (is_blank(text)) {
      issue(IssueKind::empty_document, where_line(line), "no text (empty or whitespace only)");
      return;
    }
    if (text.size() <= max_doc) {
      queue(std::move(text), label, key, line, record, ordinal, 0);
      return;
    }
    long_issue(text.size(), line);
    auto pieces = split_text(text, max_doc);
    if (opts_.long_docs == "truncate") pieces.resize(1);
    std::int32_t part = 0;
    for (auto& p : pieces)
      if (!is_blank(p)) queue(std::move(p), label, key, line, record, ordinal, part++);  // a blank tail loses nothing
  };

  auto jsonl_record = [&](std::string& line, std::int64_t line_no, std::int64_t record, std::int64_t ordinal) {
    const std::string where = where_line(line_no);
    repair(line, line_no);
    json j;
    if (json_depth(line) > kMaxJsonDepth) {
      issue(IssueKind::malformed_json, where, "JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
      return;
    }
    try {
      j = json::parse(line);
    } catch (const json::parse_error& e) {
      issue(IssueKind::malformed_json, where, json_error_text(e));
      return;
    }
    if (!j.is_object()) {
      issue(IssueKind::not_an_object, where, std::string("a JSON ") + j.type_name() + ", not an object");
      return;
    }
    json* t = const_cast<json*>(json_path(j, opts_.text_field));
    if (!t || t->is_null()) {
      issue(IssueKind::missing_text, where, "no \"" + opts_.text_field + "\" field");
      return;
    }
    if (!t->is_string()) {
      issue(IssueKind::non_string_text, where, "\"" + opts_.text_field + "\" is a " + t->type_name() + ", not a string");
      return;
    }
    std::string label, key;
    if (!opts_.label_field.empty()) {
      const json* l = json_path(j, opts_.label_field);
      if (!l || l->is_null()) issue(IssueKind::missing_label, where, "no \"" + opts_.label_field + "\" field");
      else label = scalar_text(*l);
    }
    if (!opts_.key_field.empty()) {
      const json* k = json_path(j, opts_.key_field);
      if (k && !k->is_null()) key = scalar_text(*k);
    }
    emit(std::move(t->get_ref<std::string&>()), label, key, line_no, record, ordinal);
  };

  auto close_file = [&] {
    if (!s.src->error().empty() && s.file_owner)
      issue(s.src->truncated() ? IssueKind::truncated_file : IssueKind::unreadable_file, where_line(s.line_no + 1),
            s.src->error());
    s.lines.reset();
    s.src.reset();
    s.in_file = false;
  };

  for (;;) {
    if (!s.pending.empty()) {
      doc = std::move(s.pending.front());
      s.pending.pop_front();
      return true;
    }
    if (!s.in_file) {
      if (s.file >= files_.size()) return false;
      const auto& f = files_[s.file];
      ++s.file;
      s.line_no = 0;
      s.record = 0;
      s.jsonl = opts_.format == "jsonl" || (opts_.format == "auto" && is_jsonl_name(f.first));
      s.file_owner = mine_file(s.file - 1);
      if (!s.jsonl && opts_.text_unit == "file") {
        // One record per file, owned by one shard; the others do not even open it.
        s.file_ordinal = s.ordinal++;
        s.record = 1;
        s.file_owner = mine_record(s.file_ordinal);
        if (s.file_owner) report_.records += 1;
      }
      if (s.file_owner) report_.files += 1;
      if (!s.jsonl && opts_.text_unit == "file" && !s.file_owner) continue;
      try {
        s.src = open_byte_source(f.first);
      } catch (const UserError& e) {
        if (s.file_owner) issue(IssueKind::unreadable_file, f.first, e.what());
        continue;
      }
      s.lines = std::make_unique<LineReader>(*s.src, static_cast<std::size_t>(opts_.max_line_bytes));
      s.in_file = true;
      s.text.clear();
      s.part = 0;
      s.long_reported = false;
    }

    bool too_long = false;
    if (s.jsonl) {
      // Reads until one record queued something, or the file ends.
      while (s.pending.empty() && s.lines->next(s.line, too_long)) {
        ++s.line_no;
        if (!too_long && is_blank(s.line)) continue;
        std::int64_t record = s.record++, ordinal = s.ordinal++;
        if (!mine_record(ordinal)) continue;
        report_.records += 1;
        if (too_long) {
          issue(IssueKind::long_line, where_line(s.line_no),
                "line longer than max_line_bytes " + std::to_string(opts_.max_line_bytes) + ": skipped");
          continue;
        }
        jsonl_record(s.line, s.line_no, record, ordinal);
      }
      if (s.pending.empty()) close_file();
    } else if (opts_.text_unit == "paragraph") {
      // Reads until a paragraph of this shard ends (blank line) or the file ends.
      bool eof = false;
      while (s.pending.empty()) {
        bool got = s.lines->next(s.line, too_long);
        bool blank = got && !too_long && is_blank(s.line);
        if (got) ++s.line_no;
        if (!got || blank) {
          if (s.in_para && s.para_mine) emit(std::move(s.text), "", "", s.para_line, s.para_record, s.para_ordinal);
          s.text.clear();
          s.in_para = false;
          if (!got) {
            eof = true;
            break;
          }
          continue;
        }
        if (!s.in_para) {
          s.in_para = true;
          s.para_line = s.line_no;
          s.para_record = s.record++;
          s.para_ordinal = s.ordinal++;
          s.para_mine = mine_record(s.para_ordinal);
          if (s.para_mine) report_.records += 1;
        }
        if (!s.para_mine) continue;
        if (too_long) {
          issue(IssueKind::long_line, where_line(s.line_no), "line longer than max_line_bytes: skipped");
          continue;
        }
        repair(s.line, s.line_no);
        s.text += s.line;
        s.text += '\n';
      }
      if (eof) close_file();
    } else {
      // The whole file is one document (this shard's: filtered when the file was opened). Pieces of a long
      // one are queued as they fill, so memory stays near max_doc_bytes.
      while (s.lines->next(s.line, too_long)) {
        ++s.line_no;
        if (too_long) {
          issue(IssueKind::long_line, where_line(s.line_no), "line longer than max_line_bytes: skipped");
          continue;
        }
        if (opts_.long_docs == "truncate" && s.long_reported) continue;  // read on, for stream errors
        repair(s.line, s.line_no);
        s.text += s.line;
        s.text += '\n';
        if (s.text.size() > max_doc) {
          if (!s.long_reported) long_issue(s.text.size(), 1);
          s.long_reported = true;
          auto pieces = split_text(s.text, max_doc);
          if (opts_.long_docs == "truncate") {
            queue(std::move(pieces[0]), "", "", 1, 0, s.file_ordinal, s.part++);
            s.text.clear();
          } else {
            s.text = std::move(pieces.back());
            pieces.pop_back();
            for (auto& p : pieces)
              if (!is_blank(p)) queue(std::move(p), "", "", 1, 0, s.file_ordinal, s.part++);
          }
        }
      }
      if (s.part == 0) emit(std::move(s.text), "", "", 1, 0, s.file_ordinal);
      else if (!is_blank(s.text)) queue(std::move(s.text), "", "", 1, 0, s.file_ordinal, s.part++);
      s.text.clear();
      close_file();
    }
  }
}

// ------------------------------------------------------------------------------------------- export

IngestReport write_corpus_as_lines(const CorpusOptions& opts, const std::string& path) {
  CorpusReader reader(opts);
  fs::write_atomic_with(path, [&](const stdfs::path& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) throw std::runtime_error("cannot write " + tmp.string() + ": " + std::strerror(errno));
    Document d;
    while (reader.next(d)) {
      std::size_t start = 0;
      while (start < d.text.size()) {
        std::size_t nl = d.text.find('\n', start);
        if (nl == std::string::npos) nl = d.text.size();
        std::string line = d.text.substr(start, nl - start);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!is_blank(line)) out << line << '\n';
        start = nl + 1;
      }
    }
    out.flush();
    if (!out) throw std::runtime_error("write failed for " + tmp.string() + ": " + std::strerror(errno));
  });
  return reader.report();
}

bool is_jsonl_path(const std::string& path) { return is_jsonl_name(path); }

const json* json_path(const json& obj, const std::string& dotted) {
  const json* cur = &obj;
  std::size_t start = 0;
  for (;;) {
    std::size_t dot = dotted.find('.', start);
    std::string key = dotted.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!cur->is_object()) return nullptr;
    auto it = cur->find(key);
    if (it == cur->end()) return nullptr;
    cur = &*it;
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}


}  // namespace moin
