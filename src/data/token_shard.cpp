#include "moin/data/token_shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "moin/core/strings.h"

namespace moin {

namespace stdfs = std::filesystem;

// The reader hands out the mapped little-endian arrays as they are.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "token shards assume a little-endian host");

std::string token_shard_stem(const std::string& path) {
  for (const char* ext : {".bin", ".idx", ".json"})
    if (ends_with(path, ext)) return path.substr(0, path.size() - std::strlen(ext));
  return path;
}

// ---------------------------------------------------------------------------------------------- writer

struct TokenShardWriter::Impl {
  std::string stem;
  TokenShardInfo info;
  stdfs::path bin_tmp;
  std::FILE* bin = nullptr;
  bool finished = false;
  std::vector<unsigned char> scratch;
};

static std::FILE* open_or_throw(const stdfs::path& p, const char* mode) {
  std::FILE* f = std::fopen(p.c_str(), mode);
  if (!f) throw std::runtime_error("cannot write " + p.string() + ": " + std::strerror(errno));
  return f;
}

TokenShardWriter::TokenShardWriter(const std::string& path, int vocab_size, const std::string& tokenizer_path,
                                   const std::string& tokenizer_sha256)
    : impl_(std::make_unique<Impl>()) {
  require(vocab_size > 0, "token shard " + path + ": vocabulary size must be positive");
  impl_->stem = token_shard_stem(path);
  impl_->info.dtype = vocab_size <= 65536 ? "uint16" : "uint32";
  impl_->info.vocab_size = vocab_size;
  impl_->info.tokenizer = tokenizer_path;
  impl_->info.tokenizer_sha256 = tokenizer_sha256;
  stdfs::path bin(impl_->stem + ".bin");
  if (!bin.parent_path().empty()) fs::ensure_dir(bin.parent_path());
  // An older shard of the same name stops being "complete" the moment we start replacing it.
  std::error_code ec;
  stdfs::remove(impl_->stem + ".json", ec);
  impl_->bin_tmp = fs::temp_path_for(bin);
  impl_->bin = open_or_throw(impl_->bin_tmp, "wb");
}

TokenShardWriter::~TokenShardWriter() {
  if (impl_ && !impl_->finished) {
    if (impl_->bin) std::fclose(impl_->bin);
    std::error_code ec;
    stdfs::remove(impl_->bin_tmp, ec);
  }
}

void TokenShardWriter::append(const int* ids, std::size_t n) {
  if (impl_->finished) throw std::logic_error("TokenShardWriter::append after finish()");
  const int bpt = impl_->info.bytes_per_token();
  auto& s = impl_->scratch;
  s.resize(n * bpt);
  for (std::size_t i = 0; i < n; ++i) {
    int id = ids[i];
    if (id < 0 || id >= impl_->info.vocab_size)
      throw std::invalid_argument("token id " + std::to_string(id) + " outside the vocabulary (size " +
                                  std::to_string(impl_->info.vocab_size) + ")");
    auto u = static_cast<std::uint32_t>(id);
    for (int b = 0; b < bpt; ++b) s[i * bpt + b] = static_cast<unsigned char>(u >> (8 * b));  // little-endian
  }
  if (n && std::fwrite(s.data(), 1, s.size(), impl_->bin) != s.size())
    throw std::runtime_error("write failed for " + impl_->bin_tmp.string() + ": " + std::strerror(errno));
  offsets_.push_back(offsets_.back() + n);
}

void TokenShardWriter::finish() {
  if (impl_->finished) return;
  if (std::fflush(impl_->bin) != 0 || std::fclose(impl_->bin) != 0) {
    impl_->bin = nullptr;
    throw std::runtime_error("write failed for " + impl_->bin_tmp.string() + ": " + std::strerror(errno));
  }
  impl_->bin = nullptr;
  fs::commit_temp(impl_->bin_tmp, impl_->stem + ".bin");
  fs::write_atomic_with(impl_->stem + ".idx", [&](const stdfs::path& tmp) {
    std::FILE* f = open_or_throw(tmp, "wb");
    std::vector<unsigned char> le(offsets_.size() * 8);
    for (std::size_t i = 0; i < offsets_.size(); ++i)
      for (int b = 0; b < 8; ++b) le[i * 8 + b] = static_cast<unsigned char>(offsets_[i] >> (8 * b));
    bool ok = std::fwrite(le.data(), 1, le.size(), f) == le.size();
    const int err = ok ? 0 : errno;
    ok = std::fclose(f) == 0 && ok;
    if (!ok) throw std::runtime_error("write failed for " + tmp.string() + ": " + std::strerror(err ? err : errno));
  });
  impl_->info.n_docs = num_docs();
  impl_->info.n_tokens = num_tokens();
  const auto& i = impl_->info;
  fs::write_json_atomic(impl_->stem + ".json",
                        {{"format", "moin-token-shard"}, {"version", 1}, {"dtype", i.dtype},
                         {"vocab_size", i.vocab_size}, {"n_docs", i.n_docs}, {"n_tokens", i.n_tokens},
                         {"tokenizer", i.tokenizer}, {"tokenizer_sha256", i.tokenizer_sha256}});
  impl_->finished = true;
}

// ---------------------------------------------------------------------------------------------- reader

static void* map_file(const std::string& path, std::size_t& size) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw UserError("token shard: cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw UserError("token shard: cannot stat " + path);
  }
  size = static_cast<std::size_t>(st.st_size);
  void* p = nullptr;
  if (size > 0) {
    p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw std::runtime_error("token shard: cannot mmap " + path + ": " + std::strerror(errno));
    }
  }
  ::close(fd);
  return p;
}

TokenShardReader::TokenShardReader(const std::string& path) {
  std::string stem = token_shard_stem(path);
  if (!stdfs::exists(stem + ".json"))
    throw UserError("token shard " + stem + ": " + stem + ".json is missing (not written, or unfinished)");
  auto j = fs::read_json(stem + ".json");
  try {
    if (j.value("format", "") != "moin-token-shard") throw UserError("not a moin token shard header");
    info_.dtype = j.at("dtype").get<std::string>();
    info_.vocab_size = j.at("vocab_size").get<int>();
    info_.n_docs = j.at("n_docs").get<std::int64_t>();
    info_.n_tokens = j.at("n_tokens").get<std::int64_t>();
    info_.tokenizer = j.value("tokenizer", "");
    info_.tokenizer_sha256 = j.value("tokenizer_sha256", "");
  } catch (const nlohmann::json::exception& e) {
    throw UserError("token shard " + stem + ".json: " + e.what());
  }
  require(info_.dtype == "uint16" || info_.dtype == "uint32",
          "token shard " + stem + ".json: unknown dtype '" + info_.dtype + "'");
  require(info_.n_docs >= 0 && info_.n_tokens >= 0, "token shard " + stem + ".json: negative counts");
  map_bin_ = map_file(stem + ".bin", map_bin_size_);
  try {
    map_idx_ = map_file(stem + ".idx", map_idx_size_);
    require(map_bin_size_ == static_cast<std::size_t>(info_.n_tokens) * info_.bytes_per_token(),
            "token shard " + stem + ".bin: " + std::to_string(map_bin_size_) + " bytes, the header says " +
                std::to_string(info_.n_tokens) + " tokens of " + info_.dtype);
    require(map_idx_size_ == static_cast<std::size_t>(info_.n_docs + 1) * 8,
            "token shard " + stem + ".idx: " + std::to_string(map_idx_size_) + " bytes, the header says " +
                std::to_string(info_.n_docs) + " documents");
    tokens_ = map_bin_;
    offsets_ = static_cast<const std::uint64_t*>(map_idx_);
    // The offsets must start at 0, never decrease and end at n_tokens: doc() then never reads out of range.
    bool ok = offsets_[0] == 0 && offsets_[info_.n_docs] == static_cast<std::uint64_t>(info_.n_tokens);
    for (std::int64_t i = 0; ok && i < info_.n_docs; ++i) ok = offsets_[i] <= offsets_[i + 1];
    require(ok, "token shard " + stem + ".idx: offsets are inconsistent (corrupt file)");
  } catch (...) {
    close();
    throw;
  }
}

void TokenShardReader::close() {
  if (map_bin_) ::munmap(map_bin_, map_bin_size_);
  if (map_idx_) ::munmap(map_idx_, map_idx_size_);
  map_bin_ = map_idx_ = nullptr;
  tokens_ = nullptr;
  offsets_ = nullptr;
}

TokenShardReader::~TokenShardReader() { close(); }

TokenShardReader::TokenShardReader(TokenShardReader&& o) noexcept { *this = std::move(o); }

TokenShardReader& TokenShardReader::operator=(TokenShardReader&& o) noexcept {
  if (this != &o) {
    close();
    info_ = std::move(o.info_);
    tokens_ = o.tokens_;
    offsets_ = o.offsets_;
    map_bin_ = o.map_bin_;
    map_bin_size_ = o.map_bin_size_;
    map_idx_ = o.map_idx_;
    map_idx_size_ = o.map_idx_size_;
    o.tokens_ = nullptr;
    o.offsets_ = nullptr;
    o.map_bin_ = o.map_idx_ = nullptr;
  }
  return *this;
}

std::int64_t TokenShardReader::doc_offset(std::int64_t i) const {
  if (i < 0 || i >= info_.n_docs) throw std::out_of_range("token shard: document " + std::to_string(i));
  return static_cast<std::int64_t>(offsets_[i]);
}

std::int64_t TokenShardReader::doc_length(std::int64_t i) const {
  if (i < 0 || i >= info_.n_docs) throw std::out_of_range("token shard: document " + std::to_string(i));
  return static_cast<std::int64_t>(offsets_[i + 1] - offsets_[i]);
}

int TokenShardReader::token(std::int64_t pos) const {
  if (pos < 0 || pos >= info_.n_tokens) throw std::out_of_range("token shard: token " + std::to_string(pos));
  // Little-endian on disk; the hosts moin targets are little-endian, so a plain load is the decoded value.
  if (info_.dtype == "uint16") return static_cast<const std::uint16_t*>(tokens_)[pos];
  return static_cast<int>(static_cast<const std::uint32_t*>(tokens_)[pos]);
}

void TokenShardReader::read_tokens(std::int64_t begin, std::int64_t n, int* out) const {
  if (begin < 0 || n < 0 || begin + n > info_.n_tokens)
    throw std::out_of_range("token shard: tokens [" + std::to_string(begin) + ", " + std::to_string(begin + n) +
                            ") of " + std::to_string(info_.n_tokens));
  if (info_.dtype == "uint16") {
    auto* p = static_cast<const std::uint16_t*>(tokens_) + begin;
    for (std::int64_t i = 0; i < n; ++i) out[i] = p[i];
  } else {
    auto* p = static_cast<const std::uint32_t*>(tokens_) + begin;
    for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<int>(p[i]);
  }
}

std::vector<int> TokenShardReader::doc(std::int64_t i) const {
  std::vector<int> out(static_cast<std::size_t>(doc_length(i)));
  read_tokens(doc_offset(i), static_cast<std::int64_t>(out.size()), out.data());
  return out;
}

}  // namespace moin
