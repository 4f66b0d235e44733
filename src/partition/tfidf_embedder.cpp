// TF-IDF embedder, c-BTM's recipe made fast: words (lower-case, numbers -> one token, stop words out),
// hashed unigrams and bigrams, a vocabulary of the most frequent buckets learned on a sample, smoothed idf,
// sublinear tf, L2, then a randomized truncated SVD of the sample's TF-IDF matrix to `dim` directions
// (optionally dropping the first ones), and L2 again. Saved state: embedder.json (options + sizes),
// tfidf_buckets.npy (int32 [F]: the hash bucket of each feature), tfidf_idf.npy (float32 [F]),
// tfidf_projection.npy (float32 [F, dim]).
#include "tfidf_embedder.h"

#include <omp.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>
#include <unordered_set>

#include "moin/core/clock.h"
#include "moin/core/config.h"
#include "moin/core/fs.h"
#include "moin/core/npy.h"

namespace moin::tfidf {
namespace {

const std::unordered_set<std::string_view>& stop_set() {
  // scikit-learn's ENGLISH_STOP_WORDS (318 words), as c-BTM uses them.
  static const std::unordered_set<std::string_view> s = {
    "a", "about", "above", "across", "after", "afterwards", "again", "against", "all", "almost", "alone", "along",
    "already", "also", "although", "always", "am", "among", "amongst", "amoungst", "amount", "an", "and",
    "another", "any", "anyhow", "anyone", "anything", "anyway", "anywhere", "are", "around", "as", "at", "back",
    "be", "became", "because", "become", "becomes", "becoming", "been", "before", "beforehand", "behind", "being",
    "below", "beside", "besides", "between", "beyond", "bill", "both", "bottom", "but", "by", "call", "can",
    "cannot", "cant", "co", "con", "could", "couldnt", "cry", "de", "describe", "detail", "do", "done", "down",
    "due", "during", "each", "eg", "eight", "either", "eleven", "else", "elsewhere", "empty", "enough", "etc",
    "even", "ever", "every", "everyone", "everything", "everywhere", "except", "few", "fifteen", "fifty", "fill",
    "find", "fire", "first", "five", "for", "former", "formerly", "forty", "found", "four", "from", "front",
    "full", "further", "get", "give", "go", "had", "has", "hasnt", "have", "he", "hence", "her", "here",
    "hereafter", "hereby", "herein", "hereupon", "hers", "herself", "him", "himself", "his", "how", "however",
    "hundred", "i", "ie", "if", "in", "inc", "indeed", "interest", "into", "is", "it", "its", "itself", "keep",
    "last", "latter", "latterly", "least", "less", "ltd", "made", "many", "may", "me", "meanwhile", "might",
    "mill", "mine", "more", "moreover", "most", "mostly", "move", "much", "must", "my", "myself", "name",
    "namely", "neither", "never", "nevertheless", "next", "nine", "no", "nobody", "none", "noone", "nor", "not",
    "nothing", "now", "nowhere", "of", "off", "often", "on", "once", "one", "only", "onto", "or", "other",
    "others", "otherwise", "our", "ours", "ourselves", "out", "over", "own", "part", "per", "perhaps", "please",
    "put", "rather", "re", "same", "see", "seem", "seemed", "seeming", "seems", "serious", "several", "she",
    "should", "show", "side", "since", "sincere", "six", "sixty", "so", "some", "somehow", "someone", "something",
    "sometime", "sometimes", "somewhere", "still", "such", "system", "take", "ten", "than", "that", "the",
    "their", "them", "themselves", "then", "thence", "there", "thereafter", "thereby", "therefore", "therein",
    "thereupon", "these", "they", "thick", "thin", "third", "this", "those", "though", "three", "through",
    "throughout", "thru", "thus", "to", "together", "too", "top", "toward", "towards", "twelve", "twenty", "two",
    "un", "under", "until", "up", "upon", "us", "very", "via", "was", "we", "well", "were", "what", "whatever",
    "when", "whence", "whenever", "where", "whereafter", "whereas", "whereby", "wherein", "whereupon", "wherever",
    "whether", "which", "while", "whither", "who", "whoever", "whole", "whom", "whose", "why", "will", "with",
    "within", "without", "would", "yet", "you", "your", "yours", "yourself", "yourselves",
  };
  return s;
}

inline bool word_byte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c >= 0x80;
}

inline std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

inline std::uint64_t mix(std::uint64_t h) {  // splitmix64 finaliser: good high bits for bucketing
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  return h ^ (h >> 31);
}

using Clock = std::chrono::steady_clock;

// One document's features: sorted unique ids with their raw counts.
struct Bag {
  std::vector<std::uint32_t> id;
  std::vector<float> tf;
};

class TfidfEmbedder : public Embedder {
 public:
  explicit TfidfEmbedder(const EmbedderOptions& o) : opts_(o) {}

  std::string type() const override { return "tfidf"; }
  int dim() const override { return opts_.dim; }

  void fit(const std::vector<std::string>& docs) override;
  std::vector<float> embed(const std::vector<std::string>& texts) const override;
  void save(const std::string& dir) const override;
  void load_state(const std::string& dir);

 private:
  int threads() const { return opts_.threads > 0 ? opts_.threads : omp_get_num_procs(); }
  // Hash buckets of a document's unigrams and bigrams, sorted, with counts.
  Bag buckets(std::string_view text) const;
  // TF-IDF row of a document over the kept features: ids and L2-normalised weights.
  void tfidf_row(std::string_view text, std::vector<std::int32_t>& ids, std::vector<float>& w) const {
    tfidf_row(buckets(text), ids, w);
  }
  void tfidf_row(const Bag& bag, std::vector<std::int32_t>& ids, std::vector<float>& w) const;
  void build_bucket_map();

  EmbedderOptions opts_;
  bool fitted_ = false;
  std::vector<std::int32_t> bucket_of_feature_;  // [F]
  std::vector<float> idf_;                       // [F]
  std::vector<float> projection_;                // [F x dim], row-major
  std::vector<std::int32_t> feature_of_bucket_;  // [2^hash_bits], -1 when not kept
};

Bag TfidfEmbedder::buckets(std::string_view text) const {
  std::string storage;
  auto w = words(text, opts_.stop_words, opts_.max_chars, storage);
  const int shift = 64 - opts_.hash_bits;
  std::vector<std::uint32_t> b;
  b.reserve(w.size() * (opts_.bigrams ? 2 : 1));
  std::uint64_t prev = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    std::uint64_t h = fnv1a(w[i]);
    b.push_back(static_cast<std::uint32_t>(mix(h) >> shift));
    if (opts_.bigrams && i > 0) b.push_back(static_cast<std::uint32_t>(mix(prev * 0x9e3779b97f4a7c15ULL + h + 1) >> shift));
    prev = h;
  }
  std::sort(b.begin(), b.end());
  Bag bag;
  for (std::size_t i = 0; i < b.size();) {
    std::size_t j = i;
    while (j < b.size() && b[j] == b[i]) ++j;
    bag.id.push_back(b[i]);
    bag.tf.push_back(static_cast<float>(j - i));
    i = j;
  }
  return bag;
}

void TfidfEmbedder::tfidf_row(const Bag& bag, std::vector<std::int32_t>& ids, std::vector<float>& w) const {
  ids.clear();
  w.clear();
  double norm = 0;
  for (std::size_t i = 0; i < bag.id.size(); ++i) {
    std::int32_t f = feature_of_bucket_[bag.id[i]];
    if (f < 0) continue;
    float tf = opts_.sublinear_tf ? 1.0f + std::log(bag.tf[i]) : bag.tf[i];
    float v = tf * idf_[f];
    ids.push_back(f);
    w.push_back(v);
    norm += double(v) * v;
  }
  if (norm > 0) {
    float inv = static_cast<float>(1.0 / std::sqrt(norm));
    for (auto& v : w) v *= inv;
  }
}

void TfidfEmbedder::build_bucket_map() {
  feature_of_bucket_.assign(std::size_t(1) << opts_.hash_bits, -1);
  for (std::size_t f = 0; f < bucket_of_feature_.size(); ++f) feature_of_bucket_[bucket_of_feature_[f]] = std::int32_t(f);
}

void TfidfEmbedder::fit(const std::vector<std::string>& docs) {
  require(!docs.empty(), "tfidf: fit() needs documents");
  auto t0 = Clock::now();
  const int T = threads();
  // The sample: all documents, or fit_sample of them drawn uniformly (seeded).
  std::vector<std::size_t> pick(docs.size());
  std::iota(pick.begin(), pick.end(), 0);
  std::size_t ns = docs.size();
  if (opts_.fit_sample > 0 && std::size_t(opts_.fit_sample) < docs.size()) {
    ns = std::size_t(opts_.fit_sample);
    std::mt19937_64 rng(opts_.seed);
    for (std::size_t i = 0; i < ns; ++i) std::swap(pick[i], pick[std::uniform_int_distribution<std::size_t>(i, docs.size() - 1)(rng)]);
    pick.resize(ns);
    std::sort(pick.begin(), pick.end());
  }
  std::vector<Bag> bags(ns);
#pragma omp parallel for schedule(dynamic, 32) num_threads(T)
  for (std::int64_t i = 0; i < std::int64_t(ns); ++i) bags[i] = buckets(docs[pick[i]]);

  // Vocabulary: buckets with min_df <= df <= max_df * n, the max_features most frequent.
  const std::size_t B = std::size_t(1) << opts_.hash_bits;
  std::vector<std::int32_t> df(B, 0);
  for (const auto& b : bags)
    for (auto id : b.id) ++df[id];
  const double max_count = opts_.max_df * double(ns);
  std::vector<std::int32_t> kept;
  for (std::size_t b = 0; b < B; ++b)
    if (df[b] >= opts_.min_df && df[b] <= max_count) kept.push_back(std::int32_t(b));
  if (std::int64_t(kept.size()) > opts_.max_features) {
    std::stable_sort(kept.begin(), kept.end(), [&](std::int32_t a, std::int32_t b) { return df[a] > df[b]; });
    kept.resize(opts_.max_features);
    std::sort(kept.begin(), kept.end());
  }
  const int keep_dims = opts_.dim + opts_.drop_components;
  require(std::int64_t(kept.size()) >= keep_dims,
          "tfidf: only " + std::to_string(kept.size()) + " features survive min_df/max_df on " + std::to_string(ns) +
              " documents; need at least dim + drop_components = " + std::to_string(keep_dims) +
              " (lower dim or min_df, or fit on more documents)");
  bucket_of_feature_ = kept;
  build_bucket_map();
  const std::int64_t F = std::int64_t(kept.size());
  idf_.resize(F);
  for (std::int64_t f = 0; f < F; ++f) idf_[f] = float(std::log((1.0 + double(ns)) / (1.0 + df[kept[f]])) + 1.0);

  // The sample's TF-IDF matrix, CSR [ns x F] and its transpose (CSC) for X^T Q.
  std::vector<std::vector<std::int32_t>> rid(ns);
  std::vector<std::vector<float>> rw(ns);
#pragma omp parallel for schedule(dynamic, 32) num_threads(T)
  for (std::int64_t i = 0; i < std::int64_t(ns); ++i) {
    tfidf_row(bags[i], rid[i], rw[i]);
    bags[i] = Bag();
  }
  std::vector<std::int64_t> rp(ns + 1, 0), cp(F + 1, 0);
  for (std::size_t i = 0; i < ns; ++i) {
    rp[i + 1] = rp[i] + std::int64_t(rid[i].size());
    for (auto f : rid[i]) ++cp[f + 1];
  }
  for (std::int64_t f = 0; f < F; ++f) cp[f + 1] += cp[f];
  std::vector<std::int32_t> ci(rp[ns]), ri(cp[F]);
  std::vector<float> cw(rp[ns]), rwt(cp[F]);
  {
    std::vector<std::int64_t> fill(cp.begin(), cp.end() - 1);
    for (std::size_t i = 0; i < ns; ++i)
      for (std::size_t t = 0; t < rid[i].size(); ++t) {
        ci[rp[i] + t] = rid[i][t];
        cw[rp[i] + t] = rw[i][t];
        auto& slot = fill[rid[i][t]];
        ri[slot] = std::int32_t(i);
        rwt[slot] = rw[i][t];
        ++slot;
      }
  }
  rid.clear();
  rw.clear();

  const double t_matrix = seconds_since(t0);
  // Randomized SVD (Halko, Martinsson, Tropp 2011): range of X^T through power iterations.
  const int l = std::min<std::int64_t>(std::min<std::int64_t>(F, std::int64_t(ns)), keep_dims + 16);
  require(l >= keep_dims, "tfidf: fit on at least dim + drop_components = " + std::to_string(keep_dims) + " documents");
  auto x_times = [&](const float* m, float* out) {  // out[ns x l] = X m, m: [F x l]
#pragma omp parallel for schedule(dynamic, 64) num_threads(T)
    for (std::int64_t i = 0; i < std::int64_t(ns); ++i) {
      float* o = out + i * l;
      std::fill(o, o + l, 0.0f);
      for (std::int64_t p = rp[i]; p < rp[i + 1]; ++p) {
        const float* r = m + std::int64_t(ci[p]) * l;
        float w = cw[p];
        for (int t = 0; t < l; ++t) o[t] += w * r[t];
      }
    }
  };
  auto xt_times = [&](const float* m, float* out) {  // out[F x l] = X^T m, m: [ns x l]
#pragma omp parallel for schedule(dynamic, 256) num_threads(T)
    for (std::int64_t f = 0; f < F; ++f) {
      float* o = out + f * l;
      std::fill(o, o + l, 0.0f);
      for (std::int64_t p = cp[f]; p < cp[f + 1]; ++p) {
        const float* r = m + std::int64_t(ri[p]) * l;
        float w = rwt[p];
        for (int t = 0; t < l; ++t) o[t] += w * r[t];
      }
    }
  };
  auto orth = [](torch::Tensor a) { return std::get<0>(torch::linalg_qr(a.to(torch::kDouble))).to(torch::kFloat).contiguous(); };

  torch::manual_seed(opts_.seed);
  auto gen = at::detail::createCPUGenerator(opts_.seed);
  torch::Tensor omega = at::normal(0.0, 1.0, {F, l}, gen).to(torch::kFloat).contiguous();
  torch::Tensor y = torch::empty({std::int64_t(ns), l}, torch::kFloat);
  torch::Tensor z = torch::empty({F, l}, torch::kFloat);
  x_times(omega.data_ptr<float>(), y.data_ptr<float>());
  for (int it = 0; it < opts_.power_iterations; ++it) {
    torch::Tensor q = orth(y);
    // z = X^T Q needs no re-orthonormalisation of its own: Q is orthonormal, and the next orth(y) fixes
    // the scale (this saves a QR of the large [F x l] matrix per iteration).
    xt_times(q.data_ptr<float>(), z.data_ptr<float>());
    x_times(z.data_ptr<float>(), y.data_ptr<float>());
  }
  torch::Tensor q = orth(y);
  xt_times(q.data_ptr<float>(), z.data_ptr<float>());  // z = X^T Q = B^T, B = Q^T X [l x F]
  // B^T = U S W^T (thin); the right singular vectors of X are U = B^T W S^-1, from the small Gram matrix.
  torch::Tensor zd = z.to(torch::kDouble);
  auto [evals, evecs] = torch::linalg_eigh(zd.t().mm(zd));  // ascending
  evals = evals.flip(0).clamp_min(1e-30);
  evecs = evecs.flip(1);
  torch::Tensor sv = evals.sqrt();
  torch::Tensor u = zd.mm(evecs) / sv.unsqueeze(0);  // [F x l], unit columns
  torch::Tensor p = u.narrow(1, opts_.drop_components, opts_.dim);
  if (opts_.whiten > 0) {
    // Equalise the directions' spread (relative to the first kept one, so magnitudes stay near 1).
    torch::Tensor s = sv.narrow(0, opts_.drop_components, opts_.dim);
    p = p * (s / s[0]).pow(-opts_.whiten).unsqueeze(0);
  }
  p = p.to(torch::kFloat).contiguous();
  projection_.assign(p.data_ptr<float>(), p.data_ptr<float>() + F * opts_.dim);
  fitted_ = true;
  auto svh = sv.narrow(0, 0, std::min<std::int64_t>(4, l));
  spdlog::info("tfidf: fitted on {} documents in {:.2f}s ({:.2f}s to TF-IDF, then the SVD): {} features ({} buckets survive min_df {}), dim {}, "
               "top singular values {:.3f} {:.3f} {:.3f}",
               ns, seconds_since(t0), t_matrix, F, std::count_if(df.begin(), df.end(), [&](std::int32_t c) { return c >= opts_.min_df; }),
               opts_.min_df, opts_.dim, svh[0].item<double>(), svh[1].item<double>(), svh[2].item<double>());
}

std::vector<float> TfidfEmbedder::embed(const std::vector<std::string>& texts) const {
  require(fitted_, "tfidf: embed() before fit()");
  const int d = opts_.dim;
  std::vector<float> out(texts.size() * std::size_t(d), 0.0f);
#pragma omp parallel num_threads(threads())
  {
    std::vector<std::int32_t> ids;
    std::vector<float> w;
#pragma omp for schedule(dynamic, 16)
    for (std::int64_t i = 0; i < std::int64_t(texts.size()); ++i) {
      tfidf_row(texts[i], ids, w);
      float* o = out.data() + i * d;
      for (std::size_t t = 0; t < ids.size(); ++t) {
        const float* r = projection_.data() + std::int64_t(ids[t]) * d;
        float v = w[t];
        for (int c = 0; c < d; ++c) o[c] += v * r[c];
      }
      double s = 0;
      for (int c = 0; c < d; ++c) s += double(o[c]) * o[c];
      // An empty document (no kept feature) stays the zero vector: it has no direction to normalise.
      if (s > 0) {
        float inv = float(1.0 / std::sqrt(s));
        for (int c = 0; c < d; ++c) o[c] *= inv;
      }
    }
  }
  return out;
}

void TfidfEmbedder::save(const std::string& dir) const {
  require(fitted_, "tfidf: save() before fit()");
  fs::ensure_dir(dir);
  namespace sfs = std::filesystem;
  const std::int64_t F = std::int64_t(idf_.size());
  npy::save((sfs::path(dir) / "tfidf_buckets.npy").string(), {F}, bucket_of_feature_.data());
  npy::save((sfs::path(dir) / "tfidf_idf.npy").string(), {F}, idf_.data());
  npy::save((sfs::path(dir) / "tfidf_projection.npy").string(), {F, opts_.dim}, projection_.data());
  nlohmann::json j = {{"type", "tfidf"}, {"dim", opts_.dim}, {"n_features", F}, {"options", config::to_json(opts_)}};
  fs::write_json_atomic(sfs::path(dir) / "embedder.json", j);
}

void TfidfEmbedder::load_state(const std::string& dir) {
  namespace sfs = std::filesystem;
  auto b = npy::load_i32((sfs::path(dir) / "tfidf_buckets.npy").string());
  auto idf = npy::load_f32((sfs::path(dir) / "tfidf_idf.npy").string());
  auto p = npy::load_f32((sfs::path(dir) / "tfidf_projection.npy").string());
  const std::int64_t F = std::int64_t(b.data.size());
  require(b.shape.size() == 1 && idf.shape == std::vector<std::int64_t>{F} &&
              p.shape == std::vector<std::int64_t>{F, opts_.dim},
          dir + ": tfidf state files disagree in shape (features " + std::to_string(F) + ", dim " +
              std::to_string(opts_.dim) + ")");
  const std::int64_t B = std::int64_t(1) << opts_.hash_bits;
  for (auto v : b.data) require(v >= 0 && v < B, dir + "/tfidf_buckets.npy: bucket out of range");
  bucket_of_feature_ = std::move(b.data);
  idf_ = std::move(idf.data);
  projection_ = std::move(p.data);
  build_bucket_map();
  fitted_ = true;
}

}  // namespace

std::vector<std::string_view> words(std::string_view text, bool stop_words, std::int64_t max_chars,
                                    std::string& storage) {
  if (max_chars > 0 && std::int64_t(text.size()) > max_chars) text = text.substr(0, std::size_t(max_chars));
  storage.assign(text.begin(), text.end());
  std::vector<std::string_view> out;
  const auto& stop = stop_set();
  std::size_t n = storage.size(), i = 0;
  static constexpr std::string_view kNum = "0num";
  while (i < n) {
    while (i < n && !word_byte(static_cast<unsigned char>(storage[i]))) ++i;
    std::size_t b = i;
    while (i < n && word_byte(static_cast<unsigned char>(storage[i]))) {
      char& c = storage[i];
      if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
      ++i;
    }
    if (i - b < 2) continue;
    std::string_view w(storage.data() + b, i - b);
    if (w[0] >= '0' && w[0] <= '9') {
      out.push_back(kNum);
      continue;
    }
    if (stop_words && stop.count(w)) continue;
    out.push_back(w);
  }
  return out;
}

std::unique_ptr<Embedder> make(const EmbedderOptions& opts) {
  opts.validate();
  return std::make_unique<TfidfEmbedder>(opts);
}

std::unique_ptr<Embedder> load(const std::string& dir, const nlohmann::json& meta) {
  EmbedderOptions opts;
  try {
    config::read_into(opts, meta.at("options"));
  } catch (const nlohmann::json::exception& e) {
    throw UserError(dir + "/embedder.json: " + e.what());
  }
  opts.validate();
  auto e = std::make_unique<TfidfEmbedder>(opts);
  e->load_state(dir);
  return e;
}

}  // namespace moin::tfidf
