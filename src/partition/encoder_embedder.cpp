// The "encoder" embedder (see include/moin/partition/encoder_embedder.h).
#include "moin/partition/encoder_embedder.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "moin/model/sentence_encoder.h"

namespace moin {

namespace stdfs = std::filesystem;

namespace {

struct Fnv {
  std::uint64_t h = 1469598103934665603ull;
  void add(const void* p, std::size_t n) {
    auto* b = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  }
  void add(const std::string& s) { add(s.data(), s.size()); }
};

class EncoderEmbedder : public Embedder {
 public:
  EncoderEmbedder(SentenceEncoder enc, int batch_size) : enc_(std::move(enc)), batch_size_(batch_size) {}

  std::string type() const override { return "encoder"; }
  int dim() const override { return enc_.dim(); }

  std::vector<float> embed(const std::vector<std::string>& texts) const override {
    torch::Tensor e = enc_.encode(texts);
    return std::vector<float>(e.data_ptr<float>(), e.data_ptr<float>() + e.numel());
  }

  void save(const std::string& dir) const override {
    fs::ensure_dir(dir);
    nlohmann::json j = {{"type", "encoder"},
                        {"encoder_dir", enc_.dir()},
                        {"max_length", enc_.max_length()},
                        {"batch_size", batch_size_},
                        {"dim", enc_.dim()},
                        {"fingerprint", encoder_fingerprint(enc_.dir())}};
    fs::write_json_atomic(stdfs::path(dir) / "embedder.json", j);
  }

 private:
  SentenceEncoder enc_;
  int batch_size_;
};

}  // namespace

std::string encoder_fingerprint(const std::string& encoder_dir) {
  stdfs::path d(encoder_dir);
  Fnv f;
  for (const char* name : {"config.json", "vocab.txt"}) {
    f.add(name);
    f.add(fs::read_text(d / name));
  }
  stdfs::path st = d / "model.safetensors";
  std::ifstream in(st, std::ios::binary);
  if (!in) throw UserError(st.string() + ": missing");
  std::uint64_t header_len = 0;
  unsigned char len8[8] = {};
  in.read(reinterpret_cast<char*>(len8), 8);
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len8[i];
  std::uint64_t size = stdfs::file_size(st);
  if (!in || header_len > size - 8) throw UserError(st.string() + ": not a safetensors file (bad header length)");
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  f.add(header);
  f.add(&size, sizeof size);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(f.h));
  return hex;
}

std::unique_ptr<Embedder> make_encoder_embedder(const std::string& encoder_dir, int batch_size, int max_length,
                                                const std::string& device) {
  require(!encoder_dir.empty(), "the encoder embedder needs a model folder (--encoder DIR, embedder.encoder_dir)");
  SentenceEncoderOptions o;
  o.batch_size = batch_size;
  int model_max = SentenceEncoder::default_max_length(encoder_dir);
  o.max_length = max_length > 0 ? std::min(max_length, model_max) : model_max;
  o.device = device;
  if (!torch::cuda::is_available() || (!device.empty() && device.rfind("cpu", 0) == 0))
    spdlog::info("encoder {}: CPU, {} threads", encoder_dir, at::get_num_threads());
  return std::make_unique<EncoderEmbedder>(SentenceEncoder::load(encoder_dir, o), batch_size);
}

std::unique_ptr<Embedder> load_encoder_embedder(const std::string& dir) {
  stdfs::path p = stdfs::path(dir) / "embedder.json";
  auto j = fs::read_json(p);
  require(j.value("type", "") == "encoder", p.string() + ": not an encoder embedder");
  require(j.contains("encoder_dir") && j["encoder_dir"].is_string(), p.string() + ": encoder_dir missing");
  std::string enc_dir = j["encoder_dir"].get<std::string>();
  require(stdfs::is_directory(enc_dir), p.string() + ": the encoder folder " + enc_dir +
                                            " it names is gone (the router needs the same model the partition used)");
  std::string want = j.value("fingerprint", "");
  std::string got = encoder_fingerprint(enc_dir);
  require(want.empty() || want == got, p.string() + ": the encoder folder " + enc_dir +
                                           " changed since the partition was made (fingerprint " + got + ", recorded " +
                                           want + ")");
  auto e = make_encoder_embedder(enc_dir, j.value("batch_size", 32), j.value("max_length", 0));
  require(e->dim() == j.value("dim", e->dim()), p.string() + ": dim differs from the encoder's");
  return e;
}

}  // namespace moin
