// A sentence-transformers folder: tokenizer, BERT, pooling, normalisation (see model/sentence_encoder.h).
#include "moin/model/sentence_encoder.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <numeric>

#include "moin/core/error.h"
#include "moin/core/fs.h"

namespace moin {

namespace stdfs = std::filesystem;

namespace {

// The pooling the folder's modules.json asks for (mean when there is no modules.json).
SentenceEncoder::Pooling read_pooling(const stdfs::path& dir) {
  stdfs::path modules = dir / "modules.json";
  if (!stdfs::exists(modules)) return SentenceEncoder::Pooling::Mean;
  auto j = fs::read_json(modules);
  if (!j.is_array()) throw UserError(modules.string() + ": expected a JSON array of modules");
  std::string pooling_path;
  bool transformer = false;
  for (const auto& m : j) {
    std::string type = m.is_object() ? m.value("type", "") : "";
    std::string path = m.is_object() ? m.value("path", "") : "";
    if (type.find("models.Transformer") != std::string::npos) {
      transformer = true;
    } else if (type.find("models.Pooling") != std::string::npos) {
      pooling_path = path;
    } else if (type.find("models.Normalize") != std::string::npos) {
      // Rows are always normalised here.
    } else {
      throw UserError(modules.string() + ": module type \"" + type +
                      "\" is not supported (moin runs Transformer, Pooling, Normalize)");
    }
  }
  require(transformer, modules.string() + ": no sentence_transformers.models.Transformer module");
  if (pooling_path.empty()) return SentenceEncoder::Pooling::Mean;
  stdfs::path pc = dir / pooling_path / "config.json";
  auto p = fs::read_json(pc);
  auto on = [&](const char* key) { return p.contains(key) && p[key].is_boolean() && p[key].get<bool>(); };
  int modes = on("pooling_mode_mean_tokens") + on("pooling_mode_cls_token") + on("pooling_mode_max_tokens") +
              on("pooling_mode_mean_sqrt_len_tokens") + on("pooling_mode_weightedmean_tokens") +
              on("pooling_mode_lasttoken");
  if (modes != 1)
    throw UserError(pc.string() + ": exactly one of pooling_mode_mean_tokens, pooling_mode_cls_token, "
                    "pooling_mode_max_tokens must be true (moin supports these three, one at a time)");
  if (on("pooling_mode_mean_tokens")) return SentenceEncoder::Pooling::Mean;
  if (on("pooling_mode_cls_token")) return SentenceEncoder::Pooling::Cls;
  if (on("pooling_mode_max_tokens")) return SentenceEncoder::Pooling::Max;
  throw UserError(pc.string() + ": this pooling mode is not supported (mean, cls or max)");
}

torch::Device pick_device(const std::string& name) {
  if (name.empty()) return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  try {
    torch::Device d(name);
    if (d.is_cuda() && !torch::cuda::is_available()) throw UserError("device " + name + ": CUDA is not available");
    return d;
  } catch (const c10::Error&) {
    throw UserError("device \"" + name + "\" is not a device name (cpu, cuda, cuda:1)");
  }
}

}  // namespace

int SentenceEncoder::default_max_length(const std::string& dir) {
  stdfs::path d(dir);
  int max_len = static_cast<int>(BertConfig::from_json_file((d / "config.json").string()).max_position_embeddings);
  stdfs::path sb = d / "sentence_bert_config.json";
  if (stdfs::exists(sb)) {
    auto j = fs::read_json(sb);
    if (j.contains("max_seq_length") && j["max_seq_length"].is_number_integer() && j["max_seq_length"].get<int>() >= 2)
      max_len = std::min(max_len, j["max_seq_length"].get<int>());
  }
  return max_len;
}

SentenceEncoder SentenceEncoder::load(const std::string& dir, const SentenceEncoderOptions& opts) {
  stdfs::path d(dir);
  require(stdfs::is_directory(d), "encoder folder " + dir + " does not exist (expected a sentence-transformers folder)");
  require(opts.batch_size > 0, "encoder batch_size must be positive");
  require(opts.max_length >= 0, "encoder max_length must be >= 0 (0 = the model's own)");
  torch::Device device = pick_device(opts.device);
  BertModel bert = BertModel::load(dir, device);

  // Truncation: the user's choice, else sentence-transformers' max_seq_length, else the tokenizer's;
  // never past the position table.
  int max_len = default_max_length(dir);
  bool lower_input = false;
  stdfs::path sb = d / "sentence_bert_config.json";
  if (stdfs::exists(sb)) lower_input = fs::read_json(sb).value("do_lower_case", false);
  if (opts.max_length > 0) max_len = std::min(opts.max_length, static_cast<int>(bert.config().max_position_embeddings));
  WordPiece tok = WordPiece::load(dir, max_len);
  if (lower_input) {
    // sentence-transformers lower-cases the text itself before the tokenizer sees it.
    WordPieceOptions o = tok.options();
    o.lower_case = true;
    std::vector<std::string> vocab;
    for (int i = 0; i < tok.vocab_size(); ++i) vocab.push_back(tok.token(i));
    tok = WordPiece(std::move(vocab), o);
  }
  if (tok.vocab_size() != bert.config().vocab_size)
    throw UserError((d / "vocab.txt").string() + ": " + std::to_string(tok.vocab_size()) +
                    " tokens, but config.json says vocab_size " + std::to_string(bert.config().vocab_size));
  return SentenceEncoder(stdfs::absolute(d).lexically_normal().string(), std::move(tok), std::move(bert),
                         read_pooling(d), opts.batch_size);
}

std::vector<std::vector<int>> SentenceEncoder::tokenize(const std::vector<std::string>& texts) const {
  std::vector<std::vector<int>> out(texts.size());
  // Tokenizing is cheap next to the forward pass but not free on long documents: spread it over threads.
  at::parallel_for(0, static_cast<std::int64_t>(texts.size()), 16, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) out[i] = tokenizer_.encode(texts[i]);
  });
  return out;
}

torch::Tensor SentenceEncoder::encode_ids(const std::vector<std::vector<int>>& batch) const {
  const std::int64_t n = static_cast<std::int64_t>(batch.size());
  std::int64_t T = 1;
  for (const auto& s : batch) T = std::max<std::int64_t>(T, static_cast<std::int64_t>(s.size()));
  torch::Tensor ids = torch::full({n, T}, tokenizer_.pad_id(), torch::kLong);
  torch::Tensor mask = torch::zeros({n, T}, torch::kLong);
  auto ia = ids.accessor<std::int64_t, 2>();
  auto ma = mask.accessor<std::int64_t, 2>();
  for (std::int64_t i = 0; i < n; ++i)
    for (std::size_t t = 0; t < batch[i].size(); ++t) {
      ia[i][t] = batch[i][t];
      ma[i][t] = 1;
    }
  torch::NoGradGuard no_grad;
  torch::Tensor h = bert_.forward(ids, mask);  // [n, T, H]
  torch::Tensor m = mask.to(h.device()).unsqueeze(-1).to(h.dtype());
  torch::Tensor pooled;
  switch (pooling_) {
    case Pooling::Mean: pooled = (h * m).sum(1) / m.sum(1).clamp_min(1e-9); break;
    case Pooling::Cls: pooled = h.select(1, 0); break;
    case Pooling::Max: pooled = std::get<0>(h.masked_fill(m == 0, -1e9).max(1)); break;
  }
  pooled = pooled / pooled.norm(2, 1, true).clamp_min(1e-12);
  return pooled.to(torch::kCPU).contiguous();
}

torch::Tensor SentenceEncoder::encode(const std::vector<std::string>& texts) const {
  const std::size_t n = texts.size();
  torch::Tensor out = torch::empty({static_cast<std::int64_t>(n), dim()}, torch::kFloat32);
  if (n == 0) return out;
  auto ids = tokenize(texts);
  // Longest first, so the first batch shows the worst-case memory at once.
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return ids[a].size() > ids[b].size(); });
  for (std::size_t start = 0; start < n; start += batch_size_) {
    std::size_t end = std::min(n, start + static_cast<std::size_t>(batch_size_));
    std::vector<std::vector<int>> batch;
    std::vector<std::int64_t> rows;
    for (std::size_t i = start; i < end; ++i) {
      batch.push_back(std::move(ids[order[i]]));
      rows.push_back(static_cast<std::int64_t>(order[i]));
    }
    out.index_copy_(0, torch::tensor(rows, torch::kLong), encode_ids(batch));
  }
  return out;
}

}  // namespace moin
