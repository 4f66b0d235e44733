#include "moin/data/tokenizer_corpus.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "moin/core/fs.h"

namespace moin {

IngestReport train_tokenizer_on_corpus(const TokenizerTrainOptions& opts, const CorpusOptions& corpus) {
  TokenizerTrainOptions o = opts;
  CorpusOptions c = corpus;
  c.inputs.clear();
  o.input.clear();
  for (const auto& in : opts.input) (is_jsonl_path(in) ? c.inputs : o.input).push_back(in);
  IngestReport report;
  if (c.inputs.empty()) {
    train_tokenizer(o);
    return report;
  }
  std::filesystem::path prefix(opts.model_prefix);
  std::filesystem::path dir = prefix.parent_path().empty() ? std::filesystem::path(".") : prefix.parent_path();
  fs::ensure_dir(dir);
  fs::require_writable(dir, "tokenizer train");
  std::filesystem::path text = fs::temp_path_for(dir / (prefix.filename().string() + ".corpus.txt"));
  try {
    report = write_corpus_as_lines(c, text.string());
    spdlog::info("tokenizer: corpus: {}", report.summary());
    o.input.push_back(text.string());
    train_tokenizer(o);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(text, ec);
    throw;
  }
  std::error_code ec;
  std::filesystem::remove(text, ec);
  return report;
}

}  // namespace moin
