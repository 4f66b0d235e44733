// The "model" embedder (see include/moin/partition/model_embedder.h).
#include "moin/partition/model_embedder.h"

#include <omp.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <exception>
#include <filesystem>
#include <numeric>
#include <set>

#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "moin/core/hash.h"
#include "moin/core/npy.h"
#include "moin/data/tokenizer.h"
#include "moin/model/checkpoint.h"
#include "moin/model/llama.h"

namespace moin {

namespace stdfs = std::filesystem;

namespace {

constexpr const char* kMeanFile = "model_mean.npy";

// The largest n' <= n that does not split a UTF-8 character.
std::size_t utf8_cut(std::string_view s, std::size_t n) {
  if (n >= s.size()) return s.size();
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

std::string default_tokenizer(const std::string& model_dir) {
  std::string found = Tokenizer::find_in_model_dir(model_dir);
  return found.empty() ? (stdfs::path(model_dir) / Tokenizer::kSentencePieceFile).string() : found;
}

class ModelEmbedder : public Embedder {
 public:
  ModelEmbedder(const EmbedderOptions& opts, std::string weights_sha) : opts_(opts) {
    require(!opts.model_dir.empty(),
            "the model embedder needs a model folder (--model DIR, embedder.model_dir)");
    opts_.model_dir = stdfs::absolute(opts.model_dir).lexically_normal().string();
    require(is_llama_checkpoint(opts_.model_dir),
            "embedder.model_dir " + opts_.model_dir + " holds no model (config.json + model.safetensors)");
    if (opts_.tokenizer.empty()) opts_.tokenizer = default_tokenizer(opts_.model_dir);
    require(stdfs::is_regular_file(opts_.tokenizer),
            "the model embedder's tokenizer " + opts_.tokenizer +
                " is missing (embedder.tokenizer; `moin partition` passes its --tokenizer)");
    opts_.tokenizer = stdfs::absolute(opts_.tokenizer).lexically_normal().string();
    tok_ = std::make_unique<Tokenizer>(Tokenizer::load(opts_.tokenizer));
    tokenizer_sha_ = sha256_file(opts_.tokenizer);
    weights_sha_ = weights_sha.empty() ? model_weights_sha256(opts_.model_dir) : std::move(weights_sha);

    device_ = parse_device(opts_.device);
    model_ = load_llama(opts_.model_dir, torch::kFloat32, device_);
    model_->set_requires_grad(false);
    model_->eval();
    const auto& c = model_->config;
    const std::int64_t L = c.num_hidden_layers;
    require(opts_.layer >= -(L + 1) && opts_.layer <= L,
            "embedder.layer " + std::to_string(opts_.layer) + " is outside [-" + std::to_string(L + 1) + ", " +
                std::to_string(L) + "] for this " + std::to_string(L) + "-layer model");
    hidden_index_ = opts_.layer < 0 ? opts_.layer + L + 1 : opts_.layer;
    require(tok_->vocab_size() <= c.vocab_size,
            "the tokenizer " + opts_.tokenizer + " has " + std::to_string(tok_->vocab_size()) +
                " tokens, more than the model's vocab_size " + std::to_string(c.vocab_size));
    bos_ = tok_->bos_id() >= 0 ? tok_->bos_id() : static_cast<int>(c.bos_token_id);
    if (opts_.max_length > c.max_position_embeddings) {
      spdlog::info("model embedder: max_length {} cut to the model's max_position_embeddings {}", opts_.max_length,
                   c.max_position_embeddings);
      opts_.max_length = static_cast<int>(c.max_position_embeddings);
    }
    spdlog::info("model embedder: {} hidden_states[{}] (layer {}), dim {}, max_length {}, batch {}, {}{}",
                 opts_.model_dir, hidden_index_, opts_.layer, dim(), opts_.max_length, opts_.batch_size,
                 device_.str(), device_.is_cpu() ? " (" + std::to_string(at::get_num_threads()) + " threads)" : "");
  }

  std::string type() const override { return "model"; }
  int dim() const override { return static_cast<int>(model_->config.hidden_size); }

  void fit(const std::vector<std::string>& sample) override { (void)fit_embed(sample); }

  std::vector<float> fit_embed(const std::vector<std::string>& sample) override {
    require(!sample.empty(), "model embedder: fit() needs documents");
    torch::Tensor raw = pooled(sample);
    if (opts_.center) mean_ = raw.to(torch::kDouble).mean(0).to(torch::kFloat).contiguous();
    fitted_ = true;
    return finish(raw);
  }

  std::vector<float> embed(const std::vector<std::string>& texts) const override {
    require(fitted_ || !opts_.center,
            "model embedder: embed() before fit() (embedder.center subtracts the mean of a fit sample)");
    return finish(pooled(texts));
  }

  void save(const std::string& dir) const override {
    require(fitted_ || !opts_.center, "model embedder: save() before fit()");
    fs::ensure_dir(dir);
    if (opts_.center) npy::save((stdfs::path(dir) / kMeanFile).string(), {dim()}, mean_.data_ptr<float>());
    nlohmann::json j = {{"type", "model"},
                        {"model_dir", opts_.model_dir},
                        {"layer", opts_.layer},
                        {"hidden_index", hidden_index_},
                        {"max_length", opts_.max_length},
                        {"batch_size", opts_.batch_size},
                        {"center", opts_.center},
                        {"dim", dim()},
                        {"tokenizer", opts_.tokenizer},
                        {"tokenizer_sha256", tokenizer_sha_},
                        {"weights_sha256", weights_sha_},
                        {"pooling", "mean, BOS excluded"}};
    if (opts_.center) j["mean"] = kMeanFile;
    fs::write_json_atomic(stdfs::path(dir) / "embedder.json", j);
  }

  void set_mean(torch::Tensor mean) {
    mean_ = std::move(mean);
    fitted_ = true;
  }

 private:
  // [BOS] + the first max_length - 1 tokens. Long documents are tokenised by growing prefixes: a prefix
  // whose encoding is 64 tokens longer than needed gives the same first tokens as the whole text
  // (SentencePiece pieces do not cross whitespace, so a cut only changes the tokens next to it).
  std::vector<std::int64_t> ids(const std::string& text) const {
    const bool bos = bos_ >= 0;
    const std::size_t want = static_cast<std::size_t>(opts_.max_length) - (bos ? 1 : 0);
    std::vector<int> t;
    for (std::size_t cut = want * 8 + 256;; cut *= 2) {
      std::size_t n = utf8_cut(text, cut);
      t = tok_->encode(std::string_view(text.data(), n));
      if (n == text.size() || t.size() >= want + 64) break;
    }
    if (t.size() > want) t.resize(want);
    std::vector<std::int64_t> out;
    out.reserve(t.size() + 1);
    if (bos) out.push_back(bos_);
    out.insert(out.end(), t.begin(), t.end());
    if (out.empty()) out.push_back(0);  // no BOS and no text: pool the state of token 0
    return out;
  }

  // The raw mean-pooled states, [n, dim] float32 on the CPU, in the order of `texts`.
  torch::Tensor pooled(const std::vector<std::string>& texts) const {
    const auto n = static_cast<std::int64_t>(texts.size());
    torch::Tensor out = torch::empty({n, dim()}, torch::kFloat);
    if (n == 0) return out;
    std::vector<std::vector<std::int64_t>> seqs(n);
#pragma omp parallel for schedule(dynamic, 16)
    for (std::int64_t i = 0; i < n; ++i) seqs[i] = ids(texts[i]);

    // Longest first, so each batch pads to little more than its own lengths.
    std::vector<std::int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](std::int64_t a, std::int64_t b) { return seqs[a].size() > seqs[b].size(); });

    const std::int64_t B = opts_.batch_size;
    const std::int64_t batches = (n + B - 1) / B;
    float* op = out.data_ptr<float>();
    const int d = dim();
    auto run_batch = [&](std::int64_t bi) {
      c10::InferenceMode inference;  // thread-local
      const std::int64_t s = bi * B, b = std::min(B, n - s);
      const auto T = static_cast<std::int64_t>(seqs[order[s]].size());
      torch::Tensor tokens = torch::zeros({b, T}, torch::kLong);
      torch::Tensor mask = torch::zeros({b, T}, torch::kFloat);
      auto* tp = tokens.data_ptr<std::int64_t>();
      auto* mp = mask.data_ptr<float>();
      for (std::int64_t r = 0; r < b; ++r) {
        const auto& q = seqs[order[s + r]];
        std::copy(q.begin(), q.end(), tp + r * T);
        // BOS is left out of the mean unless it is all there is.
        const std::size_t first = (bos_ >= 0 && q.size() > 1) ? 1 : 0;
        for (std::size_t t = first; t < q.size(); ++t) mp[r * T + t] = 1.0f;
      }
      torch::Tensor h = model_->hidden_states(tokens.to(device_), hidden_index_).to(torch::kFloat);
      torch::Tensor m = mask.to(device_).unsqueeze(-1);
      torch::Tensor p = ((h * m).sum(1) / m.sum(1)).to(torch::kCPU).contiguous();
      for (std::int64_t r = 0; r < b; ++r)
        std::copy(p.data_ptr<float>() + r * d, p.data_ptr<float>() + (r + 1) * d, op + order[s + r] * d);
    };
    const int threads = opts_.threads > 0 ? opts_.threads : omp_get_num_procs();
    if (!device_.is_cpu() || threads == 1 || batches == 1) {
      for (std::int64_t bi = 0; bi < batches; ++bi) run_batch(bi);
    } else {
      // On the CPU one batch per thread (torch runs single-threaded inside an OpenMP region): a small
      // model's per-op work is too fine to split across threads, and busy-waiting intra-op threads cost
      // more than they gain on a loaded machine. Rows are disjoint, so the writes need no lock.
      std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
      for (std::int64_t bi = 0; bi < batches; ++bi) {
        try {
          run_batch(bi);
        } catch (...) {
#pragma omp critical
          if (!error) error = std::current_exception();
        }
      }
      if (error) std::rethrow_exception(error);
    }
    return out;
  }

  std::vector<float> finish(torch::Tensor x) const {
    if (opts_.center) x = x - mean_;
    x = x / x.norm(2, 1, true).clamp_min(1e-12);
    x = x.contiguous();
    return std::vector<float>(x.data_ptr<float>(), x.data_ptr<float>() + x.numel());
  }

  EmbedderOptions opts_;
  std::unique_ptr<Tokenizer> tok_;
  std::string tokenizer_sha_, weights_sha_;
  torch::Device device_{torch::kCPU};
  mutable LlamaForCausalLM model_{nullptr};  // hidden_states() is not const; it only reads the weights
  std::int64_t hidden_index_ = 0;
  int bos_ = -1;
  bool fitted_ = false;
  torch::Tensor mean_;
};

}  // namespace

std::string model_weights_sha256(const std::string& model_dir) {
  stdfs::path d(model_dir);
  std::set<std::string> files;
  stdfs::path index = d / "model.safetensors.index.json";
  if (stdfs::exists(index)) {
    auto j = fs::read_json(index);
    require(j.contains("weight_map") && j["weight_map"].is_object(), index.string() + ": no weight_map");
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) files.insert(it.value().get<std::string>());
  } else {
    files.insert("model.safetensors");
  }
  std::string all = "config.json:" + sha256_file((d / "config.json").string()) + "\n";
  for (const auto& f : files) all += f + ":" + sha256_file((d / f).string()) + "\n";
  return sha256_hex(all);
}

std::unique_ptr<Embedder> make_model_embedder(const EmbedderOptions& opts) {
  opts.validate();
  return std::make_unique<ModelEmbedder>(opts, "");
}

std::unique_ptr<Embedder> load_model_embedder(const std::string& dir, const std::string& device) {
  stdfs::path p = stdfs::path(dir) / "embedder.json";
  auto j = fs::read_json(p);
  require(j.value("type", "") == "model", p.string() + ": not a model embedder");
  for (const char* k : {"model_dir", "tokenizer", "weights_sha256"})
    require(j.contains(k) && j[k].is_string(), p.string() + ": \"" + k + "\" missing");
  EmbedderOptions o;
  o.type = "model";
  o.model_dir = j["model_dir"].get<std::string>();
  o.tokenizer = j["tokenizer"].get<std::string>();
  o.layer = j.value("layer", -1);
  o.max_length = j.value("max_length", o.max_length);
  o.batch_size = j.value("batch_size", o.batch_size);
  o.center = j.value("center", true);
  o.device = device;
  o.validate();

  const std::string why = " (the router must embed queries with the model and tokenizer the partition used)";
  require(is_llama_checkpoint(o.model_dir), p.string() + ": the model folder " + o.model_dir + " it names is gone" + why);
  std::string sha = model_weights_sha256(o.model_dir);
  require(sha == j["weights_sha256"].get<std::string>(),
          p.string() + ": the model in " + o.model_dir + " changed since the partition was made (weights sha256 " +
              sha.substr(0, 16) + "..., recorded " + j["weights_sha256"].get<std::string>().substr(0, 16) + "...)" + why);
  require(stdfs::is_regular_file(o.tokenizer), p.string() + ": the tokenizer " + o.tokenizer + " it names is gone" + why);
  if (j.contains("tokenizer_sha256"))
    require(sha256_file(o.tokenizer) == j["tokenizer_sha256"].get<std::string>(),
            p.string() + ": the tokenizer " + o.tokenizer + " changed since the partition was made" + why);

  auto e = std::make_unique<ModelEmbedder>(o, sha);
  require(e->dim() == j.value("dim", e->dim()), p.string() + ": dim differs from the model's hidden_size");
  if (o.center) {
    auto mean = npy::load_f32((stdfs::path(dir) / kMeanFile).string());
    require(static_cast<int>(mean.data.size()) == e->dim(),
            (stdfs::path(dir) / kMeanFile).string() + ": not " + std::to_string(e->dim()) + " values");
    e->set_mean(torch::from_blob(mean.data.data(), {e->dim()}, torch::kFloat).clone());
  }
  return e;
}

}  // namespace moin
