// The embedder factory and loader: the one place that maps a type name to an implementation.
#include "moin/partition/embedder.h"

#include <filesystem>

#include "moin/core/fs.h"
#include "moin/partition/encoder_embedder.h"
#include "moin/partition/model_embedder.h"
#include "tfidf_embedder.h"

namespace moin {

std::unique_ptr<Embedder> make_embedder(const EmbedderOptions& opts) {
  opts.validate();
  if (opts.type == "tfidf") return tfidf::make(opts);
  if (opts.type == "encoder")
    return make_encoder_embedder(opts.encoder_dir, opts.batch_size, opts.max_length,
                                 opts.device == "auto" ? "" : opts.device);
  if (opts.type == "model") return make_model_embedder(opts);
  throw UserError("unknown embedder type \"" + opts.type + "\" (tfidf, model or encoder)");
}

std::unique_ptr<Embedder> load_embedder(const std::string& dir) {
  auto meta = fs::read_json(std::filesystem::path(dir) / "embedder.json");
  if (!meta.is_object() || !meta.contains("type") || !meta["type"].is_string())
    throw UserError(dir + "/embedder.json: no \"type\"");
  std::string type = meta["type"].get<std::string>();
  if (type == "tfidf") return tfidf::load(dir, meta);
  if (type == "encoder") return load_encoder_embedder(dir);
  if (type == "model") return load_model_embedder(dir);
  throw UserError(dir + "/embedder.json: unknown embedder type \"" + type + "\"");
}

}  // namespace moin
