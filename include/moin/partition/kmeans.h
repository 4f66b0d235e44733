// K-means on document embeddings (faiss's Clustering underneath) and nearest-centroid assignment, plain
// or balanced (each cluster capped at ceil(balance_factor * n / k) documents, by balance.h's rule).
//
// Spherical k-means (the default) keeps centroids unit-norm and assigns by inner product (cosine for
// L2-normalised embeddings); otherwise centroids are means and assignment is by squared L2 distance.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "moin/core/error.h"

namespace moin {

struct KMeansOptions {
  int k = 8;
  int iterations = 25;
  std::uint64_t seed = 1234;
  bool spherical = true;
  int max_points_per_centroid = 256;
  std::int64_t train_sample = 0;
  int nredo = 1;
  bool plus_plus_init = true;
  double balance_factor = 0.0;
  int threads = 0;
  bool verbose = false;

  template <class V> void visit(V& v) {
    v("k", k, "number of clusters");
    v("iterations", iterations, "k-means iterations per run");
    v("seed", seed, "seed of sampling, initialisation and every redo");
    v("spherical", spherical, "unit-norm centroids, inner-product assignment (cosine); false = Euclidean k-means");
    v("max_points_per_centroid", max_points_per_centroid,
      "train on at most this many points per centroid (faiss subsamples to k x this); 0 = no cap");
    v("train_sample", train_sample, "train on a uniform sample of at most this many points (0 = all, then the cap above)");
    v("nredo", nredo, "run k-means this many times from different seeds and keep the lowest objective");
    v("plus_plus_init", plus_plus_init, "k-means++ seeding (D^2 sampling) instead of k random points");
    v("balance_factor", balance_factor,
      "0 = off; else each cluster holds at most ceil(factor * n / k) documents (factor >= 1; partition: n = all "
      "documents, capped at merge)");
    v("threads", threads, "threads (0 = all cores)");
    v("verbose", verbose, "print faiss's per-iteration objective");
  }
  void validate() const {
    require(k > 0, "kmeans.k must be positive");
    require(iterations > 0, "kmeans.iterations must be positive");
    require(max_points_per_centroid >= 0, "kmeans.max_points_per_centroid must be >= 0");
    require(train_sample >= 0, "kmeans.train_sample must be >= 0");
    require(nredo > 0, "kmeans.nredo must be positive");
    require(balance_factor == 0.0 || balance_factor >= 1.0,
            "kmeans.balance_factor must be 0 (off) or >= 1 (each cluster holds at most balance_factor x N/k "
            "documents, so below 1 the clusters cannot hold every document)");
    require(threads >= 0, "kmeans.threads must be >= 0");
  }
};

struct KMeansResult {
  int k = 0, d = 0;
  bool spherical = true;
  std::vector<float> centroids;  // row-major [k x d]
  // Of the kept run, on its training points: sum of squared L2 distances to the nearest centroid
  // (spherical: sum of (1 - inner product)), and that per iteration.
  double objective = 0.0;
  std::vector<double> iteration_objective;
  std::int64_t n_train = 0;  // points k-means was trained on (after sampling)
};

// Nearest centroid of each point. distance: squared L2 distance, or for spherical 1 - <x, c> (so smaller
// is nearer in both cases; for unit vectors 1 - <x,c> is half the squared L2 distance).
struct Assignment {
  std::vector<std::int32_t> cluster;  // [n]
  std::vector<float> distance;        // [n]
};

// Trains on x (row-major [n x d]); n >= k. Rows need not be normalised; spherical k-means treats them as
// directions. Throws UserError when n < k.
KMeansResult train_kmeans(const float* x, std::int64_t n, int d, const KMeansOptions& opts);

// The nearest-centroid rule, the one the partition, k-means' objective and the router all use. Distances are
// accumulated in double in a fixed order, so a row's result never depends on the batch or the machine's
// BLAS: the router reproduces the partition's assignment exactly, ties included. distance(x, c) is
// 1 - <x, c> (spherical) or ||x - c||^2; smaller is nearer, and equal distances go to the lower index.
// Returns the nearest centroid and its distance; with `all`, every centroid's distance is also written
// there ([k], rounded to float).
std::pair<int, float> nearest_centroid(const float* x, const float* centroids, int k, int d, bool spherical,
                                       float* all = nullptr);
inline std::pair<int, float> nearest_centroid(const float* x, const KMeansResult& km, float* all = nullptr) {
  return nearest_centroid(x, km.centroids.data(), km.k, km.d, km.spherical, all);
}
// The top_k (<= k) nearest centroids of x in that order (top_k = 1: nearest_centroid's answer).
void nearest_centroids(const float* x, const float* centroids, int k, int d, bool spherical, int top_k, int* ids,
                       float* distances);

// nearest_centroid of each row of x ([n x d]), rows in parallel.
Assignment assign(const float* x, std::int64_t n, const float* centroids, int k, int d, bool spherical);
inline Assignment assign(const float* x, std::int64_t n, const KMeansResult& km) {
  return assign(x, n, km.centroids.data(), km.k, km.d, km.spherical);
}

// The per-cluster cap of balanced assignment: ceil(balance_factor * n / k) (never below ceil(n / k)).
std::int64_t balanced_capacity(std::int64_t n, int k, double balance_factor);

// Assignment with every cluster holding at most `capacity` points (capacity * k >= n required): the
// partition's balancing rule (balance.h's assign_capped, rows in index order) on the n x k distances of
// nearest_centroid (held in memory up to 512 MB, else recomputed when read). `distance` is that of the
// centroid given.
Assignment assign_balanced(const float* x, std::int64_t n, const float* centroids, int k, int d, bool spherical,
                           std::int64_t capacity);
inline Assignment assign_balanced(const float* x, std::int64_t n, const KMeansResult& km, double balance_factor) {
  return assign_balanced(x, n, km.centroids.data(), km.k, km.d, km.spherical,
                         balanced_capacity(n, km.k, balance_factor));
}

// Centroids on disk, inside a folder (the partition directory): dir/centroids.npy (NumPy .npy, float32
// [k, d], np.load reads it) and dir/kmeans.json {"k", "d", "spherical", "objective", "n_train",
// "iteration_objective"}. Both written atomically.
void save_kmeans(const std::string& dir, const KMeansResult& km);
KMeansResult load_kmeans(const std::string& dir);

}  // namespace moin
