// Document embedders: text -> one L2-normalised float vector. One interface, one file per implementation
// (tfidf_embedder.cpp, model_embedder.cpp, encoder_embedder.cpp). The fitted state is saved inside the
// partition directory so the router embeds a query exactly as the partitioner embedded the documents.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moin/core/error.h"

namespace moin {

class Embedder {
 public:
  virtual ~Embedder() = default;
  virtual std::string type() const = 0;  // "tfidf", "model", "encoder"
  virtual int dim() const = 0;
  // Learns what it needs from a sample of documents (idf, projection); pretrained embedders ignore it.
  virtual void fit(const std::vector<std::string>& sample) { (void)sample; }
  // fit(sample) then embed(sample); an embedder that must run its model over the sample to fit (model)
  // overrides it to do that once.
  virtual std::vector<float> fit_embed(const std::vector<std::string>& sample) {
    fit(sample);
    return embed(sample);
  }
  // Row-major [texts.size() x dim()] float32, each row L2-normalised. Thread-safe.
  virtual std::vector<float> embed(const std::vector<std::string>& texts) const = 0;
  // Writes the fitted state into `dir` (its own files plus dir/embedder.json holding {"type": ...}).
  virtual void save(const std::string& dir) const = 0;
};

// How documents become vectors. `type` picks the implementation; each one reads its own fields and
// ignores the others (they are kept in one struct so a partition config has one "embedder" object).
struct EmbedderOptions {
  std::string type = "tfidf";

  // ---- tfidf: hashed word n-grams, idf, sublinear tf, L2, truncated SVD to `dim`, L2 (c-BTM's recipe).
  int dim = 128;
  int hash_bits = 20;
  int max_features = 65536;
  bool bigrams = true;
  std::int64_t fit_sample = 20000;
  int min_df = 2;
  double max_df = 0.5;
  bool sublinear_tf = true;
  bool stop_words = false;
  int drop_components = 0;
  double whiten = 0.0;
  int power_iterations = 4;
  std::int64_t max_chars = 20000;
  std::uint64_t seed = 1234;
  int threads = 0;

  // ---- model: mean-pooled hidden states of a layer of the frozen base LLM (model_embedder.h).
  std::string model_dir;
  int layer = -1;
  std::string tokenizer;
  bool center = true;
  std::string device = "auto";
  // ---- encoder: a sentence-transformers encoder (written by another helper).
  std::string encoder_dir;
  int batch_size = 32;
  int max_length = 512;

  template <class V> void visit(V& v) {
    v("type", type, "embedder: tfidf (hashed TF-IDF + truncated SVD), model (base LLM hidden states), encoder (sentence encoder)");
    v("dim", dim, "tfidf: output dimension (truncated SVD components kept)");
    v("hash_bits", hash_bits, "tfidf: n-grams are hashed into 2^hash_bits buckets before vocabulary selection");
    v("max_features", max_features, "tfidf: keep at most this many buckets (highest document frequency) after min_df/max_df");
    v("bigrams", bigrams, "tfidf: add word bigrams (of the kept words) to the unigrams");
    v("fit_sample", fit_sample, "tfidf: documents sampled (uniformly, seeded) to learn the vocabulary, idf and projection; 0 = all");
    v("min_df", min_df, "tfidf: drop buckets present in fewer than this many sample documents");
    v("max_df", max_df, "tfidf: drop buckets present in more than this fraction of sample documents");
    v("sublinear_tf", sublinear_tf, "tfidf: term frequency 1 + log(tf) instead of tf");
    v("stop_words", stop_words, "tfidf: remove English stop words (scikit-learn's list; off by default: function words tell sources apart)");
    v("drop_components", drop_components, "tfidf: drop the first N singular directions (the first is the corpus mean direction)");
    v("whiten", whiten, "tfidf: scale SVD direction i by singular_value_i^-whiten (0 = plain SVD, 1 = full whitening)");
    v("power_iterations", power_iterations, "tfidf: power iterations of the randomized SVD (more = more accurate)");
    v("max_chars", max_chars, "tfidf: only the first N characters of a document are read (0 = all)");
    v("seed", seed, "tfidf: seed of the fit sample and of the randomized SVD");
    v("threads", threads, "threads for embed() (0 = all cores)");
    v("model_dir", model_dir, "model: folder of the base model (Hugging Face layout: config.json + model.safetensors)");
    v("layer", layer, "model: hidden_states index to pool, as Hugging Face's output_hidden_states: 0 = token embeddings, i = output of decoder layer i, -1 = last (after the final norm)");
    v("tokenizer", tokenizer, "model: tokenizer of the base model, .model or tokenizer.json (\"\" = the partition's tokenizer, else MODEL_DIR/tokenizer.model or tokenizer.json)");
    v("center", center, "model: subtract the mean pooled vector of the fit sample before L2 normalisation");
    v("device", device, "model/encoder: auto (CUDA when available), cpu, cuda or cuda:N");
    v("encoder_dir", encoder_dir, "encoder: folder of the sentence encoder");
    v("batch_size", batch_size, "model/encoder: documents per forward pass");
    v("max_length", max_length, "model/encoder: tokens read per document");
  }
  void validate() const {
    require(type == "tfidf" || type == "model" || type == "encoder",
            "embedder.type must be tfidf, model or encoder (got \"" + type + "\")");
    require(dim > 0, "embedder.dim must be positive");
    require(hash_bits >= 8 && hash_bits <= 28, "embedder.hash_bits must be in [8, 28]");
    require(max_features >= dim, "embedder.max_features must be at least embedder.dim");
    require(fit_sample >= 0, "embedder.fit_sample must be >= 0");
    require(min_df >= 1, "embedder.min_df must be >= 1");
    require(max_df > 0 && max_df <= 1, "embedder.max_df must be in (0, 1]");
    require(drop_components >= 0 && drop_components < dim, "embedder.drop_components must be in [0, dim)");
    require(whiten >= 0 && whiten <= 2, "embedder.whiten must be in [0, 2]");
    require(power_iterations >= 0, "embedder.power_iterations must be >= 0");
    require(max_chars >= 0, "embedder.max_chars must be >= 0");
    require(threads >= 0, "embedder.threads must be >= 0");
    require(batch_size > 0, "embedder.batch_size must be positive");
    require(max_length > 0, "embedder.max_length must be positive");
    require(!device.empty(), "embedder.device must be auto, cpu, cuda or cuda:N");
  }
};

// A new, unfitted embedder of opts.type (call fit() before embed() for tfidf). UserError for an unknown
// type or invalid options.
std::unique_ptr<Embedder> make_embedder(const EmbedderOptions& opts);

// Reads dir/embedder.json and restores the embedder that save() wrote there.
std::unique_ptr<Embedder> load_embedder(const std::string& dir);

}  // namespace moin
