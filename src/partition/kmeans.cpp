// K-means through faiss::Clustering, with our own redo loop (each run seeded differently, the lowest
// objective on the training points kept), k-means++ seeding for small k, and the nearest-centroid rule.
#include "moin/partition/kmeans.h"

#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include <omp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <numeric>
#include <random>

#include "moin/core/fs.h"
#include "moin/core/npy.h"
#include "moin/partition/balance.h"

namespace moin {
namespace {

// Restores OpenMP's thread count when it goes (faiss reads omp_get_max_threads()).
struct ThreadScope {
  int saved;
  explicit ThreadScope(int threads) : saved(omp_get_max_threads()) {
    if (threads > 0) omp_set_num_threads(threads);
  }
  ~ThreadScope() { omp_set_num_threads(saved); }
};

// k-means++ (D^2 sampling) on unit rows for spherical, raw rows otherwise. O(n k d), sequential in k.
std::vector<float> plus_plus(const float* x, std::int64_t n, int d, int k, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> c(static_cast<std::size_t>(k) * d);
  std::vector<double> best(n, std::numeric_limits<double>::infinity());
  std::int64_t pick = std::uniform_int_distribution<std::int64_t>(0, n - 1)(rng);
  for (int j = 0; j < k; ++j) {
    std::copy(x + pick * d, x + (pick + 1) * d, c.begin() + static_cast<std::size_t>(j) * d);
    const float* cj = c.data() + static_cast<std::size_t>(j) * d;
    double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
    for (std::int64_t i = 0; i < n; ++i) {
      const float* xi = x + i * d;
      double s = 0;
      for (int t = 0; t < d; ++t) {
        double diff = double(xi[t]) - cj[t];
        s += diff * diff;
      }
      if (s < best[i]) best[i] = s;
      total += best[i];
    }
    if (j + 1 == k) break;
    if (total <= 0) {  // every point already is a centroid: fall back to uniform picks
      pick = std::uniform_int_distribution<std::int64_t>(0, n - 1)(rng);
      continue;
    }
    double r = std::uniform_real_distribution<double>(0, total)(rng), acc = 0;
    pick = n - 1;
    for (std::int64_t i = 0; i < n; ++i) {
      acc += best[i];
      if (acc >= r && best[i] > 0) {
        pick = i;
        break;
      }
    }
  }
  return c;
}

// Above this many distance evaluations (k * n * d) k-means++ is too slow to be worth it (it is a
// sequential pass per centroid); faiss's random init is used instead.
constexpr double kPlusPlusBudget = 4e9;

}  // namespace

KMeansResult train_kmeans(const float* x, std::int64_t n, int d, const KMeansOptions& opts) {
  opts.validate();
  require(d > 0, "kmeans: dimension must be positive");
  require(n >= opts.k, "kmeans: " + std::to_string(n) + " points cannot make " + std::to_string(opts.k) + " clusters");
  ThreadScope threads(opts.threads);

  // The training points: a uniform sample when asked, unit rows for spherical k-means.
  std::vector<float> sample;
  const float* xt = x;
  std::int64_t nt = n;
  if (opts.train_sample > 0 && opts.train_sample < n) {
    nt = std::max<std::int64_t>(opts.train_sample, opts.k);
    std::vector<std::int64_t> perm(n);
    std::iota(perm.begin(), perm.end(), 0);
    std::mt19937_64 rng(opts.seed ^ 0x5851f42d4c957f2dULL);
    for (std::int64_t i = 0; i < nt; ++i) std::swap(perm[i], perm[std::uniform_int_distribution<std::int64_t>(i, n - 1)(rng)]);
    std::sort(perm.begin(), perm.begin() + nt);
    sample.resize(static_cast<std::size_t>(nt) * d);
    for (std::int64_t i = 0; i < nt; ++i) std::copy(x + perm[i] * d, x + (perm[i] + 1) * d, sample.begin() + i * d);
    xt = sample.data();
  }
  if (opts.spherical) {
    if (sample.empty()) sample.assign(x, x + n * d);
    for (std::int64_t i = 0; i < nt; ++i) {
      float* r = sample.data() + i * d;
      double s = 0;
      for (int t = 0; t < d; ++t) s += double(r[t]) * r[t];
      if (s > 0) {
        float inv = static_cast<float>(1.0 / std::sqrt(s));
        for (int t = 0; t < d; ++t) r[t] *= inv;
      }
    }
    xt = sample.data();
  }

  faiss::ClusteringParameters cp;
  cp.niter = opts.iterations;
  cp.nredo = 1;
  cp.verbose = opts.verbose;
  cp.spherical = opts.spherical;
  cp.min_points_per_centroid = 1;  // small clusters are the caller's business, not a warning
  cp.max_points_per_centroid = opts.max_points_per_centroid > 0 ? opts.max_points_per_centroid
                                                                 : std::numeric_limits<int>::max() / 2;
  std::int64_t n_faiss = std::min<std::int64_t>(nt, std::int64_t(opts.k) * cp.max_points_per_centroid);
  bool use_pp = opts.plus_plus_init && double(opts.k) * double(n_faiss) * d <= kPlusPlusBudget;
  if (opts.plus_plus_init && !use_pp)
    spdlog::debug("kmeans: k = {} over {} points: random init (k-means++ would be too slow)", opts.k, n_faiss);

  KMeansResult best;
  best.objective = std::numeric_limits<double>::infinity();
  for (int r = 0; r < opts.nredo; ++r) {
    std::uint64_t seed = opts.seed + 1000003ULL * r;
    faiss::ClusteringParameters cpr = cp;
    cpr.seed = static_cast<int>(seed & 0x7fffffff);
    faiss::Clustering clus(d, opts.k, cpr);
    if (use_pp) {
      // Seed on the same points faiss will iterate on (its own subsample when capped).
      if (n_faiss < nt) {
        std::vector<float> sub(static_cast<std::size_t>(n_faiss) * d);
        std::mt19937_64 rng(seed * 31 + 7);
        std::vector<std::int64_t> perm(nt);
        std::iota(perm.begin(), perm.end(), 0);
        for (std::int64_t i = 0; i < n_faiss; ++i)
          std::swap(perm[i], perm[std::uniform_int_distribution<std::int64_t>(i, nt - 1)(rng)]);
        for (std::int64_t i = 0; i < n_faiss; ++i) std::copy(xt + perm[i] * d, xt + (perm[i] + 1) * d, sub.begin() + i * d);
        clus.centroids = plus_plus(sub.data(), n_faiss, d, opts.k, seed);
      } else {
        clus.centroids = plus_plus(xt, nt, d, opts.k, seed);
      }
    }
    std::unique_ptr<faiss::IndexFlat> index;
    if (opts.spherical) index = std::make_unique<faiss::IndexFlatIP>(d);
    else index = std::make_unique<faiss::IndexFlatL2>(d);
    clus.train(nt, xt, *index);

    KMeansResult res;
    res.k = opts.k;
    res.d = d;
    res.spherical = opts.spherical;
    res.centroids = clus.centroids;
    res.n_train = nt;
    for (const auto& s : clus.iteration_stats)
      res.iteration_objective.push_back(opts.spherical ? double(n_faiss) - s.obj : s.obj);
    Assignment a = assign(xt, nt, res);
    res.objective = 0;
    for (float v : a.distance) res.objective += v;
    spdlog::debug("kmeans: run {}/{} objective {:.6g}", r + 1, opts.nredo, res.objective);
    if (res.objective < best.objective) best = std::move(res);
  }
  return best;
}

std::pair<int, float> nearest_centroid(const float* x, const float* centroids, int k, int d, bool spherical,
                                       float* all) {
  int best = 0;
  double best_d = 0;
  for (int c = 0; c < k; ++c) {
    const float* cc = centroids + static_cast<std::size_t>(c) * d;
    double dist = 0;
    if (spherical) {
      double ip = 0;
      for (int j = 0; j < d; ++j) ip += static_cast<double>(x[j]) * cc[j];
      dist = 1.0 - ip;
    } else {
      for (int j = 0; j < d; ++j) {
        double t = static_cast<double>(x[j]) - cc[j];
        dist += t * t;
      }
    }
    if (all) all[c] = static_cast<float>(dist);
    if (c == 0 || dist < best_d) {
      best = c;
      best_d = dist;
    }
  }
  return {best, static_cast<float>(best_d)};
}

void nearest_centroids(const float* x, const float* centroids, int k, int d, bool spherical, int top_k, int* ids,
                       float* distances) {
  require(top_k >= 1 && top_k <= k, "nearest_centroids: top_k must be in [1, k]");
  if (top_k == 1) {
    auto [c, dist] = nearest_centroid(x, centroids, k, d, spherical);
    ids[0] = c;
    distances[0] = dist;
    return;
  }
  // Ranked by the float distances nearest_centroid reports, then by index: the first is nearest_centroid's
  // answer unless two double distances round to the same float, so it is taken from there.
  std::vector<float> all(static_cast<std::size_t>(k));
  auto [first, first_d] = nearest_centroid(x, centroids, k, d, spherical, all.data());
  std::vector<int> order;
  order.reserve(static_cast<std::size_t>(k) - 1);
  for (int c = 0; c < k; ++c)
    if (c != first) order.push_back(c);
  std::partial_sort(order.begin(), order.begin() + (top_k - 1), order.end(),
                    [&](int a, int b) { return all[a] != all[b] ? all[a] < all[b] : a < b; });
  ids[0] = first;
  distances[0] = first_d;
  for (int j = 1; j < top_k; ++j) {
    ids[j] = order[static_cast<std::size_t>(j) - 1];
    distances[j] = all[static_cast<std::size_t>(ids[j])];
  }
}

Assignment assign(const float* x, std::int64_t n, const float* centroids, int k, int d, bool spherical) {
  require(k > 0 && d > 0, "assign: k and d must be positive");
  Assignment out;
  if (n <= 0) return out;
  out.cluster.resize(static_cast<std::size_t>(n));
  out.distance.resize(static_cast<std::size_t>(n));
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    auto [c, dist] = nearest_centroid(x + i * d, centroids, k, d, spherical);
    out.cluster[static_cast<std::size_t>(i)] = c;
    out.distance[static_cast<std::size_t>(i)] = dist;
  }
  return out;
}

std::int64_t balanced_capacity(std::int64_t n, int k, double balance_factor) {
  std::int64_t even = (n + k - 1) / k;
  if (balance_factor <= 0) return n;  // off: no cap
  auto cap = static_cast<std::int64_t>(std::ceil(balance_factor * double(n) / double(k) - 1e-9));
  return std::max(cap, even);
}

Assignment assign_balanced(const float* x, std::int64_t n, const float* centroids, int k, int d, bool spherical,
                           std::int64_t capacity) {
  require(k > 0 && d > 0, "assign_balanced: k and d must be positive");
  Assignment out;
  if (n <= 0) return out;
  // The n x k distances in memory (computed in parallel) up to 512 MB; beyond, each row when it is read.
  std::vector<float> rows, one(static_cast<std::size_t>(k));
  const bool in_memory = static_cast<double>(n) * k <= static_cast<double>(1 << 27);
  if (in_memory) {
    rows.resize(static_cast<std::size_t>(n) * k);
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) nearest_centroid(x + i * d, centroids, k, d, spherical, rows.data() + i * k);
  }
  CappedAssignment ca = assign_capped(n, k, capacity, [&](std::int64_t i) -> const float* {
    if (in_memory) return rows.data() + i * k;
    nearest_centroid(x + i * d, centroids, k, d, spherical, one.data());
    return one.data();
  });
  out.cluster = std::move(ca.cluster);
  out.distance = std::move(ca.distance);
  return out;
}

void save_kmeans(const std::string& dir, const KMeansResult& km) {
  require(km.k > 0 && km.d > 0 && km.centroids.size() == std::size_t(km.k) * km.d, "save_kmeans: empty result");
  fs::ensure_dir(dir);
  npy::save((std::filesystem::path(dir) / "centroids.npy").string(), {km.k, km.d}, km.centroids.data());
  nlohmann::json j = {{"k", km.k},
                      {"d", km.d},
                      {"spherical", km.spherical},
                      {"objective", km.objective},
                      {"n_train", km.n_train},
                      {"iteration_objective", km.iteration_objective}};
  fs::write_json_atomic(std::filesystem::path(dir) / "kmeans.json", j);
}

KMeansResult load_kmeans(const std::string& dir) {
  auto j = fs::read_json(std::filesystem::path(dir) / "kmeans.json");
  auto c = npy::load_f32((std::filesystem::path(dir) / "centroids.npy").string());
  KMeansResult km;
  try {
    km.k = j.at("k").get<int>();
    km.d = j.at("d").get<int>();
    km.spherical = j.at("spherical").get<bool>();
    km.objective = j.value("objective", 0.0);
    km.n_train = j.value("n_train", std::int64_t(0));
    km.iteration_objective = j.value("iteration_objective", std::vector<double>{});
  } catch (const nlohmann::json::exception& e) {
    throw UserError(dir + "/kmeans.json: " + e.what());
  }
  require(c.shape.size() == 2 && c.shape[0] == km.k && c.shape[1] == km.d,
          dir + "/centroids.npy: shape does not match kmeans.json's k and d");
  // A NaN centroid is never the nearest, so its expert would silently receive no query.
  for (std::size_t i = 0; i < c.data.size(); ++i)
    require(std::isfinite(c.data[i]), dir + "/centroids.npy: centroid " + std::to_string(i / static_cast<std::size_t>(km.d)) +
                                          " holds a non-finite value (" + std::to_string(c.data[i]) +
                                          "): the partition is damaged; re-create it with `moin partition`");
  km.centroids = std::move(c.data);
  return km;
}

}  // namespace moin
