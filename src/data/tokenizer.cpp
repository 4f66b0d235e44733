#include "moin/data/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "data/spm_shim/spm_shim.h"
#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "moin/core/process.h"
#include "moin/core/strings.h"

namespace moin {

namespace {

// Finds and loads libmoin_spm.so once: $MOIN_SPM_LIBRARY, beside the executable, ../lib, the build folder.
const moin_spm_api& api() {
  static const moin_spm_api* loaded = nullptr;
  static std::string error;
  static std::once_flag once;
  std::call_once(once, [] {
    std::string path = find_companion("libmoin_spm.so", "MOIN_SPM_LIBRARY");
    if (path.empty()) {
      error = "cannot find libmoin_spm.so (keep it beside the moin executable, or set MOIN_SPM_LIBRARY)";
      return;
    }
    void* lib = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!lib) {
      error = "cannot load " + path + ": " + ::dlerror();
      return;
    }
    auto get = reinterpret_cast<const moin_spm_api* (*)()>(::dlsym(lib, "moin_spm_get_api"));
    if (get && get()->abi_version == MOIN_SPM_ABI_VERSION)
      loaded = get();
    else
      error = path + " is not a compatible libmoin_spm";
  });
  if (!loaded) throw std::runtime_error(error);
  return *loaded;
}

// SentencePiece through the shim; the handle is freed with the backend.
class SentencePieceTokenizer final : public TokenizerBackend {
 public:
  std::shared_ptr<void> handle;

  std::vector<int> encode(std::string_view text, bool add_special) const override {
    // Most text encodes to fewer ids than bytes/2; retry once with the exact size otherwise.
    std::vector<int> ids(text.size() / 2 + 16);
    long n = api().encode(handle.get(), text.data(), text.size(), ids.data(), ids.size());
    if (n < 0) throw std::runtime_error("tokenizer: encoding failed");
    if (static_cast<std::size_t>(n) > ids.size()) {
      ids.resize(static_cast<std::size_t>(n));
      n = api().encode(handle.get(), text.data(), text.size(), ids.data(), ids.size());
    }
    ids.resize(static_cast<std::size_t>(n));
    if (add_special && bos >= 0) ids.insert(ids.begin(), bos);  // what Llama's SentencePiece tokenizers add
    return ids;
  }

  std::string decode(const std::vector<int>& ids, bool /*skip_special*/) const override {
    // sentencepiece's decoder drops control pieces (BOS, EOS, PAD) itself.
    std::string out(ids.size() * 8 + 16, '\0');
    long n = api().decode(handle.get(), ids.data(), ids.size(), out.data(), out.size());
    if (n < 0) throw std::runtime_error("tokenizer: decoding failed (id out of range?)");
    if (static_cast<std::size_t>(n) > out.size()) {
      out.resize(static_cast<std::size_t>(n));
      n = api().decode(handle.get(), ids.data(), ids.size(), out.data(), out.size());
    }
    out.resize(static_cast<std::size_t>(n));
    return out;
  }

  std::string id_to_piece(int id) const override {
    char buf[256];
    long n = api().id_to_piece(handle.get(), id, buf, sizeof buf);
    if (n < 0) throw std::out_of_range("tokenizer: id " + std::to_string(id) + " out of range");
    return std::string(buf, static_cast<std::size_t>(std::min<long>(n, sizeof buf)));
  }
};

}  // namespace

// A tokenizer.json is a JSON object; a SentencePiece model is a protobuf, which never starts with '{'.
std::string Tokenizer::kind_of_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  char c = 0;
  while (in.get(c))
    if (!std::isspace(static_cast<unsigned char>(c))) return c == '{' ? "tokenizer.json" : "sentencepiece";
  return "sentencepiece";
}

std::shared_ptr<const TokenizerBackend> load_sentencepiece(const std::string& model_path) {
  const auto& a = api();
  char err[512] = {0};
  void* h = a.load(model_path.c_str(), err, sizeof err);
  if (!h) throw UserError("tokenizer: " + model_path + " is not a SentencePiece model: " + err);
  auto t = std::make_shared<SentencePieceTokenizer>();
  t->handle = std::shared_ptr<void>(h, [free = a.free](void* p) { free(p); });
  t->kind = "sentencepiece";
  t->vocab_size = a.vocab_size(h);
  t->bos = a.bos_id(h);
  t->eos = a.eos_id(h);
  t->pad = a.pad_id(h);
  t->unk = a.unk_id(h);
  return t;
}

std::string Tokenizer::find_in_model_dir(const std::string& model_dir) {
  for (const char* name : {kSentencePieceFile, kJsonFile}) {
    auto p = std::filesystem::path(model_dir) / name;
    if (std::filesystem::is_regular_file(p)) return p.string();
  }
  return "";
}

Tokenizer Tokenizer::load(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) throw UserError("tokenizer: no such file: " + path);
  Tokenizer t;
  t.impl_ = kind_of_file(path) == "tokenizer.json" ? load_tokenizer_json(path) : load_sentencepiece(path);
  t.path_ = path;
  return t;
}

void TokenizerTrainOptions::validate() const {
  require(!input.empty(), "tokenizer train: give at least one input file");
  for (const auto& f : input) require(std::filesystem::is_regular_file(f), "tokenizer train: no such file: " + f);
  require(!model_prefix.empty(), "tokenizer train: model_prefix (--output) is required");
  require(vocab_size >= 8, "tokenizer train: vocab_size must be at least 8");
  require(model_type == "bpe" || model_type == "unigram", "tokenizer train: model_type must be bpe or unigram");
}

void train_tokenizer(const TokenizerTrainOptions& o) {
  o.validate();
  int threads = o.num_threads > 0 ? o.num_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::string args = "--input=" + join(o.input, ",") + " --model_prefix=" + o.model_prefix +
                     " --vocab_size=" + std::to_string(o.vocab_size) + " --model_type=" + o.model_type +
                     " --character_coverage=" + std::to_string(o.character_coverage) +
                     " --input_sentence_size=" + std::to_string(o.input_sentence_size) +
                     " --shuffle_input_sentence=true --max_sentence_length=" + std::to_string(o.max_sentence_length) +
                     " --num_threads=" + std::to_string(threads) + " --byte_fallback=" +
                     (o.byte_fallback ? "true" : "false") +
                     " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=3 --hard_vocab_limit=false --minloglevel=2";
  // sentencepiece reports an unwritable output only as a failed save, without the reason: find it first.
  auto dir = std::filesystem::path(o.model_prefix).parent_path();
  fs::require_writable(dir.empty() ? std::filesystem::path(".") : dir, "tokenizer train");
  std::string trainer = find_companion("moin_spm_train", "MOIN_SPM_TRAIN");
  if (trainer.empty()) throw std::runtime_error("tokenizer train: moin_spm_train not found beside the moin executable");
  auto result = run_process({trainer, args});
  if (result.exit_code != 0) {
    std::string message;  // sentencepiece's own INFO lines are noise here; keep the error
    for (const auto& line : split(result.output, '\n'))
      if (!line.empty() && line.find("LOG(INFO)") == std::string::npos) message += (message.empty() ? "" : " ") + line;
    throw UserError("tokenizer train: sentencepiece failed: " + message);
  }
}

}  // namespace moin
