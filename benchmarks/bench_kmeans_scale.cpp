// K-means at scale: k = 5,000 over 200,000 synthetic 256-dim unit embeddings (a mixture of 5,000 random
// directions plus noise), then plain and balanced assignment. Prints time per phase and peak RSS.
//
//   bench_kmeans_scale [n=200000] [d=256] [k=5000] [iterations=10]
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "moin/partition/kmeans.h"

using namespace moin;
using Clock = std::chrono::steady_clock;

static double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
static double peak_rss_mb() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}

int main(int argc, char** argv) {
  std::int64_t n = 200000;
  int d = 256, k = 5000, iters = 10;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto eq = a.find('=');
    if (eq == std::string::npos) continue;
    std::string key = a.substr(0, eq), v = a.substr(eq + 1);
    if (key == "n") n = std::stoll(v);
    else if (key == "d") d = std::stoi(v);
    else if (key == "k") k = std::stoi(v);
    else if (key == "iterations") iters = std::stoi(v);
  }
  auto t = Clock::now();
  std::mt19937_64 rng(7);
  std::normal_distribution<float> g(0.f, 1.f);
  int modes = k;
  std::vector<float> centers(std::size_t(modes) * d), x(std::size_t(n) * d);
  for (auto& v : centers) v = g(rng);
  std::uniform_int_distribution<int> pick(0, modes - 1);
  for (std::int64_t i = 0; i < n; ++i) {
    const float* c = centers.data() + std::size_t(pick(rng)) * d;
    float* r = x.data() + i * d;
    double s = 0;
    for (int j = 0; j < d; ++j) {
      r[j] = c[j] + 0.8f * g(rng);
      s += double(r[j]) * r[j];
    }
    for (int j = 0; j < d; ++j) r[j] = float(r[j] / std::sqrt(s));
  }
  std::printf("data: %lld x %d (%.0f MB) in %.1fs, peak RSS %.0f MB\n", (long long)n, d, n * d * 4.0 / 1e6, since(t),
              peak_rss_mb());
  KMeansOptions o;
  o.k = k;
  o.iterations = iters;
  t = Clock::now();
  auto km = train_kmeans(x.data(), n, d, o);
  double t_train = since(t);
  std::printf("train_kmeans k=%d iterations=%d on %lld points: %.1fs, objective %.1f, peak RSS %.0f MB\n", k, iters,
              (long long)km.n_train, t_train, km.objective, peak_rss_mb());
  t = Clock::now();
  auto a = assign(x.data(), n, km);
  std::printf("assign: %.2fs, peak RSS %.0f MB\n", since(t), peak_rss_mb());
  t = Clock::now();
  auto cap = balanced_capacity(n, k, 1.5);
  auto b = assign_balanced(x.data(), n, km, 1.5);
  std::vector<std::int64_t> size(k, 0), size_plain(k, 0);
  std::int64_t moved = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    ++size[b.cluster[i]];
    ++size_plain[a.cluster[i]];
    moved += a.cluster[i] != b.cluster[i];
  }
  std::int64_t mx = 0, mxp = 0;
  for (int j = 0; j < k; ++j) {
    mx = std::max(mx, size[j]);
    mxp = std::max(mxp, size_plain[j]);
  }
  std::printf("assign_balanced (factor 1.5, cap %lld): %.2fs, largest cluster %lld (plain %lld), %lld points moved, "
              "peak RSS %.0f MB\n",
              (long long)cap, since(t), (long long)mx, (long long)mxp, (long long)moved, peak_rss_mb());
  return 0;
}
