// The partition stage: fit (sample -> embedder -> k-means), assign (one slice of the corpus -> clusters,
// tokens), merge (slices -> per-cluster shards, manifest, report). See partition.h and docs/partition.md.
#include "moin/partition/partition.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <omp.h>
#include <unistd.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <unordered_map>

#include "moin/core/clock.h"
#include "moin/core/config.h"
#include "moin/core/fs.h"
#include "moin/core/hash.h"
#include "moin/core/log.h"
#include "moin/core/progress.h"
#include "moin/core/reservoir.h"
#include "moin/core/strings.h"
#include "moin/data/token_shard.h"
#include "moin/data/tokenizer.h"
#include "moin/core/cluster_metrics.h"
#include "moin/partition/balance.h"
#include "moin/partition/layout.h"
#include "tfidf_embedder.h"

namespace moin {

namespace stdfs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kConfigFile = "partition.config.json";

int thread_count(int threads) { return threads > 0 ? threads : omp_get_num_procs(); }

// Flattens a JSON object to dotted keys, for naming the first option that differs.
void flatten(const json& j, const std::string& prefix, std::map<std::string, json>& out) {
  if (j.is_object() && !j.empty()) {
    for (auto it = j.begin(); it != j.end(); ++it) flatten(it.value(), prefix + (prefix.empty() ? "" : ".") + it.key(), out);
  } else {
    out[prefix] = j;
  }
}

std::string first_difference(const json& a, const json& b) {
  std::map<std::string, json> fa, fb;
  flatten(a, "", fa);
  flatten(b, "", fb);
  for (const auto& [k, v] : fa) {
    auto it = fb.find(k);
    if (it == fb.end() || it->second != v)
      return k + " (" + v.dump() + " here, " + (it == fb.end() ? "absent" : it->second.dump()) + " in the folder)";
  }
  for (const auto& [k, v] : fb)
    if (!fa.count(k)) return k;
  return "";
}

// Entries a partition run writes in its output folder (and the only ones `overwrite` removes).
const char* const kOwnedEntries[] = {"embedder", "centroids.npy", "kmeans.json", "fit.json", "work", "clusters",
                                     "assignments.jsonl", "manifest.json", "report.json", "report.md", kConfigFile};

// Checks the folder against the options: a folder fitted with other options is an error (or, with
// overwrite and allow_reset, is cleared).
void check_folder(const PartitionOptions& opts, bool allow_reset) {
  stdfs::path out(opts.output);
  stdfs::path cfg = out / kConfigFile;
  if (!stdfs::exists(cfg)) return;
  PartitionOptions stored;
  try {
    config::read_into(stored, fs::read_json(cfg));
  } catch (const UserError& e) {
    throw UserError(cfg.string() + ": " + e.what());
  }
  std::string diff = first_difference(partition_fingerprint(opts), partition_fingerprint(stored));
  if (diff.empty()) return;
  if (!(opts.overwrite && allow_reset))
    throw UserError("output folder " + opts.output + " holds a partition made with other options: " + diff +
                    "; use another --output, or --set overwrite=true to start over");
  spdlog::warn("partition: options changed ({}); overwrite=true: clearing {}", diff, opts.output);
  for (const char* e : kOwnedEntries) {
    std::error_code ec;
    stdfs::remove_all(out / e, ec);
  }
}

// The corpus options with the inputs as absolute paths? No: paths stay as given (relative paths are the
// user's choice and the split keys use paths relative to each input anyway).

bool split_is_valid(const Document& d, double valid_fraction, std::uint64_t seed) {
  if (valid_fraction <= 0) return false;
  std::uint64_t h = stable_hash64(d.split_key(), seed);
  return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0) < valid_fraction;
}

// Cuts s to at most n bytes at a UTF-8 character boundary.
void cut_utf8(std::string& s, std::size_t n) {
  if (s.size() <= n) return;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  s.resize(n);
}

// Distinctive words of each cluster, on the fit sample: a word scores p_c * log(p_c / p), where p_c is the
// fraction of the cluster's documents holding it and p the fraction over the sample.
std::vector<std::vector<std::string>> top_terms(const std::vector<std::string>& texts,
                                                const std::vector<int>& cluster, int k, int top) {
  std::unordered_map<std::string, std::int64_t> df;
  std::vector<std::unordered_map<std::string, std::int64_t>> dfc(k);
  std::vector<std::int64_t> nc(k, 0);
  std::string storage;
  // A few thousand documents name a cluster's words well enough; more only costs time.
  const std::size_t n_docs = std::min<std::size_t>(texts.size(), 8000);
  for (std::size_t i = 0; i < n_docs; ++i) {
    auto ws = tfidf::words(texts[i], /*stop_words=*/true, 4000, storage);
    std::vector<std::string> uniq(ws.begin(), ws.end());
    std::sort(uniq.begin(), uniq.end());
    uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
    ++nc[cluster[i]];
    for (const auto& w : uniq) {
      ++df[w];
      ++dfc[cluster[i]][w];
    }
  }
  const double n = static_cast<double>(n_docs);
  std::vector<std::vector<std::string>> out(k);
  for (int c = 0; c < k; ++c) {
    std::vector<std::pair<double, std::string>> scored;
    for (const auto& [w, cnt] : dfc[c]) {
      if (cnt < 3 || w == "0num") continue;  // (nc[c] > 0 here: the word occurs in the cluster)
      double pc = static_cast<double>(cnt) / nc[c], p = static_cast<double>(df[w]) / n;
      scored.emplace_back(-pc * std::log(pc / p), w);
    }
    std::sort(scored.begin(), scored.end());
    for (std::size_t i = 0; i < scored.size() && static_cast<int>(i) < top; ++i) out[c].push_back(scored[i].second);
  }
  return out;
}

void start_log(const PartitionOptions& opts) {
  static std::string added;
  std::string path = (stdfs::path(opts.output) / "moin.log").string();
  if (added != path) {
    log::add_file(path);
    added = path;
  }
}

void fsync_file(const stdfs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// Replaces folder `target` by `tmp` (both in the same parent), durably.
void commit_dir(const stdfs::path& tmp, const stdfs::path& target) {
  std::error_code ec;
  stdfs::remove_all(target, ec);
  stdfs::rename(tmp, target, ec);
  if (ec) throw std::runtime_error("cannot move " + tmp.string() + " to " + target.string() + ": " + ec.message());
}

}  // namespace

void PartitionOptions::validate() const {
  corpus.validate();
  embedder.validate();
  kmeans.validate();
  require(!tokenizer.empty(), "partition: no tokenizer given (--tokenizer FILE.model or tokenizer.json)");
  require(!output.empty(), "partition: no output folder given (--output DIR)");
  require(sample >= 1, "sample must be positive");
  require(sample_max_bytes >= 64, "sample_max_bytes must be at least 64");
  require(valid_fraction >= 0 && valid_fraction < 1, "valid_fraction must be in [0, 1)");
  require(num_shards >= 0, "num_shards must be >= 0");
  require(shard >= -1 && (num_shards == 0 ? shard <= 0 : shard < num_shards),
          "shard must be -1 (all) or in [0, num_shards)");
  require(batch_docs >= 1, "batch_docs must be positive");
  require(threads >= 0, "threads must be >= 0");
}

json partition_fingerprint(const PartitionOptions& opts) {
  json j = config::to_json(opts);
  for (const char* k : {"output", "shard", "num_shards", "batch_docs", "threads", "overwrite"}) j.erase(k);
  j["corpus"].erase("strict");
  j["corpus"].erase("max_examples");
  j["kmeans"].erase("threads");
  j["kmeans"].erase("verbose");
  j["embedder"].erase("threads");
  j["embedder"].erase("device");
  return j;
}

PartitionOptions load_partition_options(const std::string& dir) {
  stdfs::path cfg = stdfs::path(dir) / kConfigFile;
  if (!stdfs::exists(cfg))
    throw UserError(dir + " holds no fitted partition (" + cfg.string() + " is missing): run `moin partition fit` first");
  PartitionOptions o;
  config::read_into(o, fs::read_json(cfg));
  o.output = dir;
  return o;
}

// ------------------------------------------------------------------------------------------------- fit

void check_partition_output(const PartitionOptions& opts) {
  if (opts.output.empty()) return;
  for (const auto& input : opts.corpus.inputs) {
    // A glob's fixed part: the folder its matches come from.
    const auto wild = input.find_first_of("*?[");
    stdfs::path fixed = wild == std::string::npos ? stdfs::path(input) : stdfs::path(input.substr(0, wild)).parent_path();
    if (fixed.empty()) fixed = ".";
    const bool folder = wild != std::string::npos || stdfs::is_directory(fixed);
    const char* why = fs::is_within(fixed, opts.output)              ? " lies in the output folder "
                      : folder && fs::is_within(opts.output, fixed) ? " is a folder that holds the output folder "
                                                                     : nullptr;
    if (why)
      throw UserError("partition: the input " + input + why + opts.output +
                      ": the partition would write among the corpus's files; choose another --output");
  }
}

void partition_fit(const PartitionOptions& opts) {
  opts.validate();
  check_partition_output(opts);
  stdfs::path out(opts.output);
  fs::ensure_dir(out);
  check_folder(opts, /*allow_reset=*/true);
  if (stdfs::exists(out / "fit.json")) {
    spdlog::info("partition fit: already done in {}", opts.output);
    return;
  }
  start_log(opts);
  auto t0 = std::chrono::steady_clock::now();
  // The config first: later steps and re-runs compare themselves against it.
  fs::write_json_atomic(out / kConfigFile, config::to_json(opts));
  Tokenizer::load(opts.tokenizer);  // fail now, not after the fit, when the tokenizer is unusable

  // One pass over the corpus: a uniform reservoir sample (deterministic for a seed and a corpus).
  CorpusReader reader(opts.corpus);
  spdlog::info("partition fit: {} corpus files; sampling up to {} documents", reader.files().size(), opts.sample);
  std::vector<std::string> texts, labels;
  std::mt19937_64 rng(opts.seed);
  std::int64_t seen = 0;
  {
    Progress progress("fit: reading", 0, "docs");
    Document d;
    while (reader.next(d)) {
      std::int64_t slot = reservoir_slot(seen, opts.sample, rng);
      ++seen;
      progress.add();
      if (slot < 0) continue;
      cut_utf8(d.text, static_cast<std::size_t>(opts.sample_max_bytes));
      if (slot == static_cast<std::int64_t>(texts.size())) {
        texts.push_back(std::move(d.text));
        labels.push_back(std::move(d.label));
      } else {
        texts[slot] = std::move(d.text);
        labels[slot] = std::move(d.label);
      }
    }
  }
  spdlog::info("partition fit: ingest: {}", reader.report().summary());
  const int k = opts.kmeans.k;
  require(static_cast<std::int64_t>(texts.size()) >= k,
          "the corpus has " + std::to_string(texts.size()) + " documents, fewer than the " + std::to_string(k) +
              " clusters asked for");

  // The model embedder reads documents with the base model's tokenizer: the partition's, unless named.
  EmbedderOptions eo = opts.embedder;
  if (eo.type == "model" && eo.tokenizer.empty()) eo.tokenizer = opts.tokenizer;
  auto embedder = make_embedder(eo);
  auto t_embed = std::chrono::steady_clock::now();
  std::vector<float> x = embedder->fit_embed(texts);
  const int d = embedder->dim();
  spdlog::info("partition fit: {} embedder fitted and {} sample documents embedded (dim {}) in {:.1f} s",
               embedder->type(), texts.size(), d, seconds_since(t_embed));
  auto t_km = std::chrono::steady_clock::now();
  KMeansResult km = train_kmeans(x.data(), static_cast<std::int64_t>(texts.size()), d, opts.kmeans);
  spdlog::info("partition fit: k-means k={} on {} points, objective {:.4g}, {:.1f} s", km.k, km.n_train, km.objective,
               seconds_since(t_km));

  // The sample's clusters: sizes, distinctive words and, with labels, how well they match.
  std::vector<int> sample_cluster(texts.size());
  std::vector<std::int64_t> sample_sizes(k, 0);
  for (std::size_t i = 0; i < texts.size(); ++i) {
    sample_cluster[i] = nearest_centroid(x.data() + i * d, km).first;
    ++sample_sizes[sample_cluster[i]];
  }
  json fit = {{"schema_version", PartitionLayout::kSchemaVersion},
              {"corpus_documents", seen},
              {"sample_documents", texts.size()},
              {"embedder", embedder->type()},
              {"dim", d},
              {"k", km.k},
              {"kmeans_objective", km.objective},
              {"sample_cluster_sizes", sample_sizes},
              {"top_terms", top_terms(texts, sample_cluster, k, 12)},
              {"ingest", reader.report().to_json()}};
  bool have_labels = !opts.corpus.label_field.empty();
  if (have_labels) {
    std::vector<std::int32_t> ids = encode_labels(labels), cl(sample_cluster.begin(), sample_cluster.end());
    fit["sample_nmi"] = nmi(ids, cl);
    fit["sample_purity"] = purity(ids, cl);
    spdlog::info("partition fit: on the sample, NMI {:.3f}, purity {:.3f} against {}", fit["sample_nmi"].get<double>(),
                 fit["sample_purity"].get<double>(), opts.corpus.label_field);
  }

  stdfs::path tmp = out / ".embedder.tmp";
  std::error_code ec;
  stdfs::remove_all(tmp, ec);
  fs::ensure_dir(tmp);
  embedder->save(tmp.string());
  commit_dir(tmp, out / "embedder");
  save_kmeans(opts.output, km);
  fit["seconds"] = seconds_since(t0);
  fs::write_json_atomic(out / "fit.json", fit);  // the step's marker, last
  spdlog::info("partition fit: done in {:.1f} s", fit["seconds"].get<double>());
}

// ---------------------------------------------------------------------------------------------- assign

void partition_assign(const PartitionOptions& opts, int shard, int num_shards) {
  opts.validate();
  require(num_shards >= 1 && shard >= 0 && shard < num_shards,
          "shard " + std::to_string(shard) + " of " + std::to_string(num_shards) + " is out of range");
  stdfs::path out(opts.output);
  if (!stdfs::exists(out / "fit.json"))
    throw UserError(opts.output + " holds no fitted partition (fit.json is missing): run `moin partition fit` first");
  check_folder(opts, /*allow_reset=*/false);
  stdfs::path final_dir = out / "work" / PartitionLayout::slice_name(shard, num_shards);
  if (stdfs::exists(final_dir / "done.json")) {
    spdlog::info("partition assign: slice {} of {} already done", shard, num_shards);
    return;
  }
  start_log(opts);
  auto t0 = std::chrono::steady_clock::now();
  // A killed run leaves only this temporary folder behind; it is started afresh.
  stdfs::path tmp = out / "work" / ("." + PartitionLayout::slice_name(shard, num_shards) + ".tmp");
  std::error_code ec;
  stdfs::remove_all(tmp, ec);
  fs::ensure_dir(tmp);

  auto embedder = load_embedder((out / "embedder").string());
  KMeansResult km = load_kmeans(opts.output);
  require(km.d == embedder->dim(), "centroids.npy has dimension " + std::to_string(km.d) + ", the embedder " +
                                       std::to_string(embedder->dim()));
  Tokenizer tok = Tokenizer::load(opts.tokenizer);
  std::string tok_sha = sha256_file(opts.tokenizer);
  TokenShardWriter writer((tmp / "tokens").string(), tok.vocab_size(), opts.tokenizer, tok_sha);
  std::ofstream docs(tmp / "docs.jsonl", std::ios::binary);
  if (!docs) throw std::runtime_error("cannot write " + (tmp / "docs.jsonl").string());
  // Balancing is decided at merge, over every slice: keep each document's distance to every centroid.
  const bool balanced = opts.kmeans.balance_factor > 0;
  std::ofstream dist_out;
  if (balanced) {
    dist_out.open(tmp / "distances.f32", std::ios::binary);
    if (!dist_out) throw std::runtime_error("cannot write " + (tmp / "distances.f32").string());
  }

  CorpusReader reader(opts.corpus);
  reader.set_shard(shard, num_shards);
  const int threads = thread_count(opts.threads);
  Progress progress("assign " + std::to_string(shard) + "/" + std::to_string(num_shards), 0, "docs");
  std::vector<std::int64_t> cluster_docs(km.k, 0), cluster_tokens(km.k, 0);
  std::int64_t n_valid = 0;

  std::vector<Document> batch;
  double t_read = 0, t_embed = 0, t_tok = 0, t_write = 0;
  auto flush = [&] {
    if (batch.empty()) return;
    const std::size_t n = batch.size();
    std::vector<std::string> texts(n);
    for (std::size_t i = 0; i < n; ++i) texts[i].swap(batch[i].text);
    auto t1 = std::chrono::steady_clock::now();
    std::vector<float> x = embedder->embed(texts);
    auto t2 = std::chrono::steady_clock::now();
    t_embed += std::chrono::duration<double>(t2 - t1).count();
    std::vector<std::vector<int>> ids(n);
    std::vector<std::pair<int, float>> nearest(n);
    std::vector<float> rows(balanced ? n * static_cast<std::size_t>(km.k) : 0);
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads)
    for (std::int64_t i = 0; i < static_cast<std::int64_t>(n); ++i) {
      ids[i] = tok.encode(texts[i]);
      nearest[i] = nearest_centroid(x.data() + i * km.d, km, balanced ? rows.data() + i * km.k : nullptr);
    }
    if (balanced)
      dist_out.write(reinterpret_cast<const char*>(rows.data()), static_cast<std::streamsize>(rows.size() * sizeof(float)));
    auto t3 = std::chrono::steady_clock::now();
    t_tok += std::chrono::duration<double>(t3 - t2).count();
    for (std::size_t i = 0; i < n; ++i) {
      const Document& doc = batch[i];
      bool valid = split_is_valid(doc, opts.valid_fraction, opts.seed);
      writer.append(ids[i]);
      int c = nearest[i].first;
      ++cluster_docs[c];
      cluster_tokens[c] += static_cast<std::int64_t>(ids[i].size());
      n_valid += valid;
      json line = {{"ordinal", doc.ordinal}, {"part", doc.part},   {"source", doc.source},
                   {"line", doc.line},       {"label", doc.label}, {"cluster", c},
                   {"distance", nearest[i].second}, {"split", valid ? "valid" : "train"},
                   {"tokens", ids[i].size()}};
      docs << line.dump() << '\n';
    }
    t_write += seconds_since(t3);
    progress.add(static_cast<std::int64_t>(n));
    batch.clear();
  };
  Document d;
  auto t_r = std::chrono::steady_clock::now();
  while (reader.next(d)) {
    batch.push_back(std::move(d));
    if (static_cast<int>(batch.size()) >= opts.batch_docs) {
      t_read += seconds_since(t_r);
      flush();
      t_r = std::chrono::steady_clock::now();
    }
  }
  t_read += seconds_since(t_r);
  flush();
  spdlog::info("partition assign: time in reading {:.1f} s, embedding {:.1f} s, tokenising + nearest centroid "
               "{:.1f} s ({} threads), writing {:.1f} s", t_read, t_embed, t_tok, threads, t_write);
  progress.finish();
  writer.finish();
  docs.flush();
  if (!docs) throw std::runtime_error("write failed for " + (tmp / "docs.jsonl").string() + ": " + std::strerror(errno));
  docs.close();
  if (balanced) {
    dist_out.flush();
    if (!dist_out) throw std::runtime_error("write failed for " + (tmp / "distances.f32").string() + ": " + std::strerror(errno));
    dist_out.close();
    fsync_file(tmp / "distances.f32");
  }
  fs::write_json_atomic(tmp / "ingest.json", reader.report().to_json());
  json done = {{"shard", shard},
               {"num_shards", num_shards},
               {"documents", writer.num_docs()},
               {"tokens", writer.num_tokens()},
               {"valid_documents", n_valid},
               {"cluster_documents", cluster_docs},
               {"cluster_tokens", cluster_tokens},
               {"seconds", seconds_since(t0)}};
  fs::write_json_atomic(tmp / "done.json", done);
  fsync_file(tmp / "docs.jsonl");  // durable before the folder appears under its final name
  commit_dir(tmp, final_dir);
  spdlog::info("partition assign: slice {} of {}: {} documents, {} tokens ({} valid documents), {:.1f} s", shard,
               num_shards, writer.num_docs(), writer.num_tokens(), n_valid, done["seconds"].get<double>());
  spdlog::info("partition assign: ingest: {}", reader.report().summary());
}

// ----------------------------------------------------------------------------------------------- merge

namespace {

struct DocRef {
  std::int64_t ordinal;
  std::int32_t part;
  std::int32_t shard;
  std::int64_t local;  // index in the slice's token shard
  std::int32_t cluster;   // the nearest centroid (as assign wrote it)
  std::int32_t assigned;  // the cluster it goes to: the nearest, or with balancing the capped one
  bool valid;
};

// One slice's distances.f32 (float32 [documents x k]), mapped read-only: the balanced merge reads it in
// corpus order first, then only the rows of documents whose nearest clusters have filled up.
class DistanceRows {
 public:
  DistanceRows(const stdfs::path& path, std::int64_t n, int k) : k_(k) {
    std::error_code ec;
    auto size = stdfs::file_size(path, ec);
    if (ec)
      throw UserError(path.string() + " is missing: the slice was assigned without balancing; re-run assign "
                                      "(delete its work/shard-* folder)");
    require(size == static_cast<std::uintmax_t>(n) * k * sizeof(float),
            path.string() + ": " + std::to_string(size) + " bytes, expected " + std::to_string(n) + " documents x " +
                std::to_string(k) + " float32");
    bytes_ = static_cast<std::size_t>(size);
    if (bytes_ == 0) return;
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) throw std::runtime_error("cannot open " + path.string());
    void* p = ::mmap(nullptr, bytes_, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) throw std::runtime_error("cannot map " + path.string());
    data_ = static_cast<const float*>(p);
  }
  ~DistanceRows() {
    if (data_) ::munmap(const_cast<float*>(data_), bytes_);
  }
  DistanceRows(const DistanceRows&) = delete;
  DistanceRows& operator=(const DistanceRows&) = delete;
  const float* row(std::int64_t i) const { return data_ + static_cast<std::size_t>(i) * k_; }

 private:
  const float* data_ = nullptr;
  std::size_t bytes_ = 0;
  int k_;
};

int detect_num_shards(const stdfs::path& work) {
  std::map<int, int> done;  // num_shards -> complete slices
  std::error_code ec;
  if (!stdfs::is_directory(work)) return 0;
  for (const auto& e : stdfs::directory_iterator(work, ec)) {
    int s = 0, n = 0;
    if (std::sscanf(e.path().filename().c_str(), "shard-%d-of-%d", &s, &n) == 2 && stdfs::exists(e.path() / "done.json"))
      ++done[n];
  }
  if (done.size() == 1) return done.begin()->first;
  if (done.empty()) return 0;
  std::string list;
  for (auto& [n, c] : done) list += (list.empty() ? "" : ", ") + std::to_string(n);
  throw UserError("work/ holds slices of several runs (num_shards " + list + "): pass --num-shards");
}

std::string md_escape(std::string s) {
  for (char& c : s)
    if (c == '|' || c == '\n') c = ' ';
  return s;
}

// What a finished merge reported, read back from its manifest.
PartitionSummary summary_from_manifest(const json& m) {
  PartitionSummary summary;
  summary.clusters = m.value("k", 0);
  summary.documents = m.value("documents", std::int64_t{0});
  summary.tokens = m.value("tokens", std::int64_t{0});
  summary.train_documents = m.value("train_documents", std::int64_t{0});
  summary.valid_documents = m.value("valid_documents", std::int64_t{0});
  summary.nmi = m.value("nmi", -1.0);
  summary.purity = m.value("purity", -1.0);
  if (m.contains("balance")) {
    summary.capacity = m["balance"].value("capacity", std::int64_t{0});
    summary.moved_documents = m["balance"].value("moved_documents", std::int64_t{0});
  }
  return summary;
}

// The number of slices to merge (given, or detected from work/); UserError unless every one is finished.
int finished_slices(const PartitionOptions& opts, const PartitionLayout& layout) {
  int n_shards = opts.num_shards > 0 ? opts.num_shards : detect_num_shards(layout.work_dir());
  require(n_shards > 0, "partition merge: no finished slices in " + layout.work_dir() +
                            ": run `moin partition assign` first");
  std::vector<std::string> missing;
  for (int s = 0; s < n_shards; ++s)
    if (!stdfs::exists(stdfs::path(layout.slice_dir(s, n_shards)) / "done.json")) missing.push_back(std::to_string(s));
  require(missing.empty(), "partition merge: slices " + join(missing, ", ") + " of " + std::to_string(n_shards) +
                               " are not finished: run `moin partition assign --shard I --num-shards " +
                               std::to_string(n_shards) + "` for each");
  return n_shards;
}

// The labels against the clusters, with every one of the k clusters counted (empty trailing ones too).
Contingency label_table(const std::vector<std::int32_t>& label_ids, const std::vector<DocRef>& refs, int k,
                        bool nearest) {
  std::vector<std::int32_t> cl(refs.size());
  for (std::size_t i = 0; i < refs.size(); ++i) cl[i] = nearest ? refs[i].cluster : refs[i].assigned;
  Contingency t = contingency(label_ids, cl);
  t.n_clusters = std::max(t.n_clusters, k);
  t.counts.resize(static_cast<std::size_t>(t.n_clusters) * t.n_labels, 0);
  return t;
}

// The merge, step by step; each step reads what the ones before it left here.
struct Merge {
  const PartitionOptions& opts;
  const PartitionLayout& layout;
  int n_shards = 0, k = 0;
  KMeansResult km;
  json fit;
  // gather_slices: every document of every slice, and `order`, their positions in corpus order.
  std::vector<TokenShardReader> readers;
  std::vector<DocRef> refs;
  std::vector<std::string> labels;
  IngestReport ingest;
  std::vector<std::size_t> order;
  // cap_clusters (balanced only): the cap, the documents moved, each one's distance to its cluster.
  bool balanced = false;
  std::int64_t capacity = 0, moved = 0;
  std::vector<float> assigned_distance;
  // write_cluster_shards: the manifest's "clusters" entries, the token shards' tokenizer, the counts.
  json clusters = json::array();
  TokenShardInfo tok_info;
  PartitionSummary summary;
  // write_report: the label agreement and the balance section (also in the manifest).
  bool have_labels = false;
  json balance;

  void gather_slices();
  void cap_clusters();
  void write_cluster_shards();
  void write_assignments() const;
  void write_report();
  void write_manifest() const;
};

void Merge::gather_slices() {
  ingest.max_examples = opts.corpus.max_examples;
  for (int s = 0; s < n_shards; ++s) {
    stdfs::path dir = layout.slice_dir(s, n_shards);
    readers.emplace_back((dir / "tokens").string());
    ingest.merge(IngestReport::from_json(fs::read_json(dir / "ingest.json")));
    std::ifstream in(dir / "docs.jsonl", std::ios::binary);
    std::string line;
    std::int64_t local = 0;
    while (std::getline(in, line)) {
      auto j = json::parse(line);
      auto c = j["cluster"].get<std::int32_t>();
      refs.push_back({j["ordinal"].get<std::int64_t>(), j["part"].get<std::int32_t>(), s, local++, c, c,
                      j["split"] == "valid"});
      labels.push_back(j["label"].get<std::string>());
    }
    require(local == readers.back().num_docs(), dir.string() + ": docs.jsonl and the token shard disagree");
  }
  // Corpus order: ordinal, then piece.
  order.resize(refs.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return refs[a].ordinal != refs[b].ordinal ? refs[a].ordinal < refs[b].ordinal : refs[a].part < refs[b].part;
  });
}

// Balancing: one cap over every document (train and valid), the greedy of balance.h in corpus order.
void Merge::cap_clusters() {
  auto t_bal = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<DistanceRows>> rows;
  for (int s = 0; s < n_shards; ++s)
    rows.push_back(std::make_unique<DistanceRows>(stdfs::path(layout.slice_dir(s, n_shards)) / "distances.f32",
                                                  readers[s].num_docs(), k));
  const auto n = static_cast<std::int64_t>(refs.size());
  capacity = balanced_capacity(n, k, opts.kmeans.balance_factor);
  CappedAssignment ca = assign_capped(n, k, capacity, [&](std::int64_t p) {
    const DocRef& r = refs[order[p]];
    return rows[r.shard]->row(r.local);
  });
  assigned_distance.resize(refs.size());
  for (std::int64_t p = 0; p < n; ++p) {
    DocRef& r = refs[order[p]];
    r.assigned = ca.cluster[p];
    assigned_distance[order[p]] = ca.distance[p];
    moved += r.assigned != r.cluster;
  }
  summary.capacity = capacity;
  summary.moved_documents = moved;
  spdlog::info("partition merge: balanced (factor {}): at most {} documents per cluster, {} of {} documents moved "
               "off their nearest centroid ({:.1f} s)",
               opts.kmeans.balance_factor, capacity, moved, n, seconds_since(t_bal));
}

// Per-cluster shards, written one at a time in corpus order.
void Merge::write_cluster_shards() {
  std::vector<std::vector<std::size_t>> bucket(2 * static_cast<std::size_t>(k));
  for (std::size_t i : order) bucket[2 * refs[i].assigned + (refs[i].valid ? 1 : 0)].push_back(i);
  tok_info = readers.front().info();
  std::vector<int> buf;
  Progress progress("merge", static_cast<std::int64_t>(refs.size()), "docs");
  for (int c = 0; c < k; ++c) {
    json entry = {{"id", c}};
    for (int v = 0; v < 2; ++v) {
      const char* split = v ? "valid" : "train";
      std::string rel = PartitionLayout::cluster_shard_rel(c, split);
      TokenShardWriter w(layout.cluster_shard(c, split), tok_info.vocab_size, tok_info.tokenizer,
                         tok_info.tokenizer_sha256);
      for (std::size_t i : bucket[2 * c + v]) {
        const auto& r = readers[refs[i].shard];
        buf.resize(static_cast<std::size_t>(r.doc_length(refs[i].local)));
        r.read_tokens(r.doc_offset(refs[i].local), static_cast<std::int64_t>(buf.size()), buf.data());
        w.append(buf);
      }
      w.finish();
      progress.add(w.num_docs());
      entry[split] = {{"path", rel}, {"documents", w.num_docs()}, {"tokens", w.num_tokens()}};
      summary.tokens += w.num_tokens();
      (v ? summary.valid_documents : summary.train_documents) += w.num_docs();
    }
    entry["documents"] = entry["train"]["documents"].get<std::int64_t>() + entry["valid"]["documents"].get<std::int64_t>();
    entry["tokens"] = entry["train"]["tokens"].get<std::int64_t>() + entry["valid"]["tokens"].get<std::int64_t>();
    if (fit.contains("top_terms") && c < static_cast<int>(fit["top_terms"].size())) entry["top_terms"] = fit["top_terms"][c];
    clusters.push_back(entry);
  }
  progress.finish();
  summary.clusters = k;
  summary.documents = static_cast<std::int64_t>(refs.size());
}

// assignments.jsonl: each slice's docs.jsonl is in corpus order, so reading them in step restores it.
void Merge::write_assignments() const {
  fs::write_atomic_with(stdfs::path(layout.dir()) / "assignments.jsonl", [&](const stdfs::path& tmp) {
    std::ofstream o(tmp, std::ios::binary);
    std::vector<std::ifstream> ins;
    for (int s = 0; s < n_shards; ++s) ins.emplace_back(stdfs::path(layout.slice_dir(s, n_shards)) / "docs.jsonl");
    std::string line;
    for (std::size_t i : order) {
      std::getline(ins[refs[i].shard], line);
      if (refs[i].assigned != refs[i].cluster) {  // moved by balancing: the cluster it went to, and its nearest
        auto j = json::parse(line);
        j["nearest"] = refs[i].cluster;
        j["nearest_distance"] = j["distance"];
        j["cluster"] = refs[i].assigned;
        j["distance"] = assigned_distance[i];
        line = j.dump();
      }
      o << line << '\n';
    }
    o.flush();
    if (!o) throw std::runtime_error("write failed for " + tmp.string() + ": " + std::strerror(errno));
  });
}

// report.json and report.md: sizes, distinctive words, agreement with the labels when there are labels,
// and with balancing, the cap, who moved, and how the clusters would have looked without it.
void Merge::write_report() {
  have_labels = !opts.corpus.label_field.empty() && !refs.empty();
  json report = {{"k", k},
                 {"documents", summary.documents},
                 {"tokens", summary.tokens},
                 {"train_documents", summary.train_documents},
                 {"valid_documents", summary.valid_documents},
                 {"clusters", clusters},
                 {"ingest", ingest.to_json()},
                 {"fit", {{"sample_documents", fit.value("sample_documents", 0)},
                          {"kmeans_objective", fit.value("kmeans_objective", 0.0)},
                          {"seconds", fit.value("seconds", 0.0)}}}};
  std::vector<std::string> label_names;
  std::vector<ClusterLabels> tops;
  if (have_labels) {
    Contingency t = label_table(encode_labels(labels, &label_names), refs, k, /*nearest=*/false);
    summary.nmi = nmi(t);
    summary.purity = purity(t);
    tops = top_labels(t, 3);
    report["label_field"] = opts.corpus.label_field;
    report["nmi"] = summary.nmi;
    report["purity"] = summary.purity;
    for (const auto& cl_top : tops) {
      json tl = json::array();
      for (const auto& [id, cnt] : cl_top.top) tl.push_back({{"label", label_names[id]}, {"documents", cnt}});
      report["clusters"][cl_top.cluster]["top_labels"] = tl;
    }
  }
  if (balanced) {
    std::vector<std::int64_t> nearest_docs(k, 0);
    for (const auto& r : refs) ++nearest_docs[r.cluster];
    balance = {{"factor", opts.kmeans.balance_factor},
               {"capacity", capacity},
               {"moved_documents", moved},
               {"nearest_cluster_documents", nearest_docs}};
    if (have_labels) {
      Contingency t = label_table(encode_labels(labels), refs, k, /*nearest=*/true);
      balance["nearest_nmi"] = nmi(t);
      balance["nearest_purity"] = purity(t);
    }
    report["balance"] = balance;
  }
  fs::write_json_atomic(stdfs::path(layout.dir()) / "report.json", report);

  std::string md = "# Partition report\n\n";
  md += std::to_string(summary.documents) + " documents (" + std::to_string(summary.train_documents) + " train, " +
        std::to_string(summary.valid_documents) + " valid), " + std::to_string(summary.tokens) + " tokens, " +
        std::to_string(k) + " clusters (embedder " + fit.value("embedder", std::string("?")) + ").\n\n";
  if (have_labels) {
    char buf2[160];
    std::snprintf(buf2, sizeof buf2, "Against `%s`: NMI %.4f, purity %.4f.\n\n", opts.corpus.label_field.c_str(),
                  summary.nmi, summary.purity);
    md += buf2;
  }
  if (balanced) {
    std::string nearest_sizes;
    for (const auto& v : balance["nearest_cluster_documents"])
      nearest_sizes += (nearest_sizes.empty() ? "" : ", ") + std::to_string(v.get<std::int64_t>());
    char buf3[320];
    std::snprintf(buf3, sizeof buf3,
                  "Balanced (`kmeans.balance_factor` %g, train and valid together): at most %lld documents per "
                  "cluster; %lld documents moved off their nearest centroid.",
                  opts.kmeans.balance_factor, static_cast<long long>(capacity), static_cast<long long>(moved));
    md += std::string(buf3) + " Nearest-centroid cluster sizes: " + nearest_sizes;
    if (balance.contains("nearest_nmi")) {
      std::snprintf(buf3, sizeof buf3, " (NMI %.4f, purity %.4f)", balance["nearest_nmi"].get<double>(),
                    balance["nearest_purity"].get<double>());
      md += buf3;
    }
    md += ".\n\n";
  }
  md += "| cluster | train docs | valid docs | train tokens | top labels | top terms (fit sample) |\n";
  md += "| ---: | ---: | ---: | ---: | --- | --- |\n";
  for (int c = 0; c < k; ++c) {
    const auto& e = clusters[c];
    std::string tl;
    if (have_labels && c < static_cast<int>(tops.size()))
      for (const auto& [id, cnt] : tops[c].top)
        tl += (tl.empty() ? "" : ", ") + md_escape(label_names[id]) + " (" + std::to_string(cnt) + ")";
    std::string terms;
    if (e.contains("top_terms"))
      for (const auto& w : e["top_terms"]) terms += (terms.empty() ? "" : " ") + md_escape(w.get<std::string>());
    md += "| " + std::to_string(c) + " | " + std::to_string(e["train"]["documents"].get<std::int64_t>()) + " | " +
          std::to_string(e["valid"]["documents"].get<std::int64_t>()) + " | " +
          std::to_string(e["train"]["tokens"].get<std::int64_t>()) + " | " + tl + " | " + terms + " |\n";
  }
  md += "\nIngest: " + ingest.summary() + "\n";
  for (int i = 0; i < kNumIssueKinds; ++i)
    for (const auto& ex : ingest.examples[i]) md += "- " + std::string(issue_name(static_cast<IssueKind>(i))) + ": " + md_escape(ex) + "\n";
  fs::write_atomic(stdfs::path(layout.dir()) / "report.md", md);
}

// manifest.json, the partition's marker: written last.
void Merge::write_manifest() const {
  json manifest = {{"moin_version", MOIN_VERSION},
                   {"inputs", opts.corpus.inputs},
                   {"options", config::to_json(opts)},
                   {"k", k},
                   {"embedder", {{"type", fit.value("embedder", std::string())}, {"dim", km.d}, {"path", "embedder"}}},
                   {"centroids", {{"path", "centroids.npy"}, {"shape", {km.k, km.d}}, {"dtype", "float32"},
                                  {"spherical", km.spherical}, {"kmeans", "kmeans.json"}}},
                   {"tokenizer", {{"path", tok_info.tokenizer}, {"kind", Tokenizer::kind_of_file(tok_info.tokenizer)},
                                  {"sha256", tok_info.tokenizer_sha256},
                                  {"vocab_size", tok_info.vocab_size}, {"dtype", tok_info.dtype}}},
                   {"num_shards", n_shards},
                   {"documents", summary.documents},
                   {"tokens", summary.tokens},
                   {"train_documents", summary.train_documents},
                   {"valid_documents", summary.valid_documents},
                   {"valid_fraction", opts.valid_fraction},
                   {"clusters", clusters},
                   {"assignments", "assignments.jsonl"},
                   {"report", "report.json"}};
  if (have_labels) {
    manifest["nmi"] = summary.nmi;
    manifest["purity"] = summary.purity;
  }
  if (balanced) manifest["balance"] = balance;
  layout.write_manifest(manifest);
}

}  // namespace

PartitionSummary partition_merge(const PartitionOptions& opts) {
  opts.validate();
  const PartitionLayout layout(opts.output);
  if (!stdfs::exists(layout.fit_file()))
    throw UserError(opts.output + " holds no fitted partition (fit.json is missing): run `moin partition fit` first");
  check_folder(opts, /*allow_reset=*/false);
  if (layout.finished()) {
    spdlog::info("partition merge: already done ({})", layout.manifest_file());
    return summary_from_manifest(layout.read_manifest());
  }
  start_log(opts);
  auto t0 = std::chrono::steady_clock::now();
  Merge m{opts, layout};
  m.n_shards = finished_slices(opts, layout);
  m.km = load_kmeans(layout.centroids_dir());
  m.k = m.km.k;
  m.fit = fs::read_json(layout.fit_file());
  m.balanced = opts.kmeans.balance_factor > 0;

  m.gather_slices();
  if (m.balanced) m.cap_clusters();
  m.write_cluster_shards();
  m.write_assignments();
  m.write_report();
  m.summary.seconds = seconds_since(t0);
  m.write_manifest();
  const auto& summary = m.summary;
  spdlog::info("partition merge: {} clusters, {} documents, {} tokens{} in {:.1f} s", m.k, summary.documents,
               summary.tokens,
               m.have_labels ? fmt::format(", NMI {:.4f}, purity {:.4f}", summary.nmi, summary.purity) : std::string(),
               summary.seconds);
  return summary;
}

PartitionSummary run_partition(const PartitionOptions& opts) {
  auto t0 = std::chrono::steady_clock::now();
  partition_fit(opts);
  const int n = opts.num_shards > 0 ? opts.num_shards : 1;
  if (opts.shard >= 0) {
    partition_assign(opts, opts.shard, n);
    return {};
  }
  for (int s = 0; s < n; ++s) partition_assign(opts, s, n);
  PartitionOptions merge_opts = opts;
  merge_opts.num_shards = n;
  PartitionSummary summary = partition_merge(merge_opts);
  summary.seconds = seconds_since(t0);
  return summary;
}

}  // namespace moin
