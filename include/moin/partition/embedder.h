// Document embedders: text -> one L2-normalised float vector. One interface, one file per implementation
// (tfidf.cpp, model_embedder.cpp, encoder_embedder.cpp). The fitted state is saved inside the partition
// directory so the router embeds a query exactly as the partitioner embedded the documents.
#pragma once
#include <memory>
#include <string>
#include <vector>

namespace moin {

class Embedder {
 public:
  virtual ~Embedder() = default;
  virtual std::string type() const = 0;  // "tfidf", "model", "encoder"
  virtual int dim() const = 0;
  // Learns what it needs from a sample of documents (idf, projection); pretrained embedders ignore it.
  virtual void fit(const std::vector<std::string>& sample) { (void)sample; }
  // Row-major [texts.size() x dim()] float32, each row L2-normalised. Thread-safe.
  virtual std::vector<float> embed(const std::vector<std::string>& texts) const = 0;
  // Writes the fitted state into `dir` (its own files plus dir/embedder.json holding {"type": ...}).
  virtual void save(const std::string& dir) const = 0;
};

// Reads dir/embedder.json and restores the embedder that save() wrote there.
std::unique_ptr<Embedder> load_embedder(const std::string& dir);

}  // namespace moin
