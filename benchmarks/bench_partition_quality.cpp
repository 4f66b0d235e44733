// Partition quality and speed on the labelled corpus: fit the TF-IDF embedder on train.jsonl, embed it,
// k-means, assign; save the embedder and centroids, reload them, embed + assign valid.jsonl; report the
// NMI and purity of the clusters against meta.pile_set_name (train and held-out) and the time per phase.
//
//   bench_partition_quality [--data DIR] [--seeds N] [--first-seed S] [key=value ...]
//
// key=value overrides the options (JSON values): embedder.dim=192, kmeans.k=10, kmeans.nredo=3, ...
// DIR defaults to ../shared/data beside the source tree. The seed of each run sets embedder.seed and
// kmeans.seed.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moin/core/config.h"
#include "moin/core/cluster_metrics.h"
#include "moin/partition/embedder.h"
#include "moin/partition/kmeans.h"

using namespace moin;
using Clock = std::chrono::steady_clock;

namespace {

struct BenchOptions {
  EmbedderOptions embedder;
  KMeansOptions kmeans;
  BenchOptions() { kmeans.k = 10; }
  template <class V> void visit(V& v) {
    v("embedder", embedder, "embedder options");
    v("kmeans", kmeans, "k-means options");
  }
};

struct Corpus {
  std::vector<std::string> text;
  std::vector<std::string> label;
};

Corpus read_jsonl(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  Corpus c;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    c.text.push_back(j.at("text").get<std::string>());
    c.label.push_back(j.at("meta").at("pile_set_name").get<std::string>());
  }
  return c;
}

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
// CPU seconds (user + system, all threads) of this process: the machine is shared, so wall time alone
// overstates the cost when other jobs compete for the cores.
double cpu_seconds() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

}  // namespace

int main(int argc, char** argv) try {
  std::string data = (std::filesystem::path(MOIN_SOURCE_DIR) / ".." / "shared" / "data").string();
  int seeds = 3, first_seed = 1;
  std::vector<std::string> sets;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--data" && i + 1 < argc) data = argv[++i];
    else if (a == "--seeds" && i + 1 < argc) seeds = std::stoi(argv[++i]);
    else if (a == "--first-seed" && i + 1 < argc) first_seed = std::stoi(argv[++i]);
    else if (a.find('=') != std::string::npos) sets.push_back(a);
    else {
      std::fprintf(stderr, "usage: %s [--data DIR] [--seeds N] [--first-seed S] [key=value ...]\n", argv[0]);
      return 2;
    }
  }
  auto opts = config::load<BenchOptions>("", sets);
  auto t0 = Clock::now();
  Corpus train = read_jsonl(data + "/corpus/train.jsonl");
  Corpus valid = read_jsonl(data + "/corpus/valid.jsonl");
  std::vector<std::string> names;
  auto ytrain = encode_labels(train.label, &names);
  std::vector<std::int32_t> yvalid;
  {
    std::vector<std::string> all = train.label;
    all.insert(all.end(), valid.label.begin(), valid.label.end());
    auto ids = encode_labels(all);
    yvalid.assign(ids.begin() + std::ptrdiff_t(train.label.size()), ids.end());
  }
  std::printf("read %zu train + %zu valid documents in %.2fs\n", train.text.size(), valid.text.size(), since(t0));
  std::printf("options: %s\n", config::to_json(opts).dump().c_str());

  double sum_valid = 0, sum_train = 0, sum_time = 0, sum_cpu = 0;
  auto tmp = std::filesystem::temp_directory_path() / ("moin-bench-" + std::to_string(::getpid()));
  for (int s = first_seed; s < first_seed + seeds; ++s) {
    BenchOptions o = opts;
    o.embedder.seed = std::uint64_t(s);
    o.kmeans.seed = std::uint64_t(s);
    auto t = Clock::now();
    double cpu0 = cpu_seconds();
    auto emb = make_embedder(o.embedder);
    emb->fit(train.text);
    double t_fit = since(t);
    t = Clock::now();
    auto x = emb->embed(train.text);
    double t_embed = since(t);
    t = Clock::now();
    auto km = train_kmeans(x.data(), std::int64_t(train.text.size()), emb->dim(), o.kmeans);
    double t_kmeans = since(t);
    t = Clock::now();
    auto a = o.kmeans.balance_factor > 0 ? assign_balanced(x.data(), std::int64_t(train.text.size()), km, o.kmeans.balance_factor)
                                         : assign(x.data(), std::int64_t(train.text.size()), km);
    double t_assign = since(t);
    double total = t_fit + t_embed + t_kmeans + t_assign;
    double cpu = cpu_seconds() - cpu0;

    // Held-out: through the saved state, as the router would.
    emb->save((tmp / "embedder").string());
    save_kmeans(tmp.string(), km);
    auto emb2 = load_embedder((tmp / "embedder").string());
    auto km2 = load_kmeans(tmp.string());
    t = Clock::now();
    auto xv = emb2->embed(valid.text);
    auto av = assign(xv.data(), std::int64_t(valid.text.size()), km2);
    double t_valid = since(t);

    auto ct = contingency(ytrain, a.cluster);
    auto cv = contingency(yvalid, av.cluster);
    double nmi_t = nmi(ct), nmi_v = nmi(cv);
    sum_valid += nmi_v;
    sum_train += nmi_t;
    sum_time += total;
    sum_cpu += cpu;
    std::printf("seed %d: NMI valid %.4f train %.4f | purity valid %.4f train %.4f | objective %.1f | "
                "fit %.2fs embed %.2fs kmeans %.2fs assign %.3fs = %.2fs wall, %.2fs CPU | valid embed+assign %.3fs\n",
                s, nmi_v, nmi_t, purity(cv), purity(ct), km.objective, t_fit, t_embed, t_kmeans, t_assign, total, cpu,
                t_valid);
    for (const auto& cl : top_labels(ct, 3)) {
      std::printf("   cluster %2d: %6lld docs:", cl.cluster, (long long)cl.size);
      for (auto [l, n] : cl.top) std::printf(" %s %lld", names[l].c_str(), (long long)n);
      std::printf("\n");
    }
    std::fflush(stdout);
  }
  std::filesystem::remove_all(tmp);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  std::printf("mean over %d seeds: NMI valid %.4f train %.4f, pipeline %.2fs wall, %.2fs CPU (peak RSS %.0f MB)\n",
              seeds, sum_valid / seeds, sum_train / seeds, sum_time / seeds, sum_cpu / seeds, ru.ru_maxrss / 1024.0);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_partition_quality: %s\n", e.what());
  return 1;
}
