// Hugging Face tokenizer.json, byte-level BPE (GPT-2, Llama-3, Qwen2, SmolLM), in plain C++.
//
// encode(text) follows tokenizers' pipeline step by step (tokenizer/mod.rs):
//   1. added tokens with normalized=false are split off the raw text (leftmost-longest match);
//   2. the other pieces are normalized (nothing or NFC) and added tokens with normalized=true split off;
//   3. the pre-tokenizer splits the rest (Split regex, Digits, ByteLevel with or without its GPT-2 regex);
//   4. each piece's bytes go through the ranked BPE merges (ignore_merges: a piece that is itself in the
//      vocabulary is one token), with a per-thread cache of pieces already seen;
//   5. with add_special, the post-processor's template adds its special tokens (BOS/EOS).
// Tokens are kept as raw bytes: the GPT-2 byte-to-unicode map is applied to the vocabulary once, at load,
// instead of to every piece of text.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <queue>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "data/bpe_text.h"
#include "moin/core/error.h"
#include "moin/core/json.h"
#include "moin/data/tokenizer.h"

namespace moin {

namespace {

using json = nlohmann::json;

// ---- GPT-2's byte <-> unicode map (openai/gpt-2 encoder.py bytes_to_unicode): printable bytes map to
// themselves, the others to U+0100 onwards, so every byte is a visible character in vocabulary files.
struct ByteMap {
  char32_t to_cp[256];
  std::unordered_map<char32_t, unsigned char> to_byte;
  ByteMap() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_cp[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      to_byte[to_cp[b]] = static_cast<unsigned char>(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

// The raw bytes a vocabulary string stands for; false when a character is outside the byte map.
bool unmap_bytes(const std::string& piece, std::string* out) {
  const auto& m = byte_map();
  out->clear();
  for (std::size_t i = 0; i < piece.size();) {
    int len;
    char32_t cp = bpe::decode_utf8(piece, i, &len);
    auto it = m.to_byte.find(cp);
    if (it == m.to_byte.end()) return false;
    *out += static_cast<char>(it->second);
    i += static_cast<std::size_t>(len);
  }
  return true;
}

// ---- merges: (left id, right id) -> (rank, merged id), open addressing on one 64-bit key.
class PairMap {
 public:
  struct Value {
    std::uint32_t rank, id;
  };
  void reserve(std::size_t n) {
    std::size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    slots_.assign(cap, Slot{kEmpty, {0, 0}});
    mask_ = cap - 1;
  }
  bool insert(int a, int b, Value v) {  // false when the pair is already there (first rank wins)
    std::uint64_t key = pack(a, b);
    for (std::size_t i = hash(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return false;
      if (slots_[i].key == kEmpty) {
        slots_[i] = Slot{key, v};
        return true;
      }
    }
  }
  const Value* find(int a, int b) const {
    std::uint64_t key = pack(a, b);
    for (std::size_t i = hash(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i].value;
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr std::uint64_t kEmpty = ~0ull;
  struct Slot {
    std::uint64_t key;
    Value value;
  };
  static std::uint64_t pack(int a, int b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }
  std::size_t hash(std::uint64_t k) const { return static_cast<std::size_t>((k * 0x9E3779B97F4A7C15ull) >> 20) & mask_; }
  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
};

// ---- added tokens
struct AddedToken {
  std::string content;
  int id = -1;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

// Rust regex's \s and \w, as tokenizers' lstrip/rstrip/single_word read them (\w approximated by
// letters, numbers and '_').
bool is_space_cp(char32_t cp) { return bpe::char_class(cp) & bpe::kSpace; }
bool is_word_cp(char32_t cp) { return cp == '_' || (bpe::char_class(cp) & (bpe::kLetter | bpe::kNumber)); }

struct Segment {
  std::size_t begin, end;
  int id;  // the added token's id, or -1 for text between added tokens
};

// Finds added tokens in text like tokenizers' AddedVocabulary::find_matches: leftmost-longest matches,
// whitespace absorbed by lstrip/rstrip, single_word matches only between non-word characters.
class AddedMatcher {
 public:
  void add(const AddedToken* t) {
    if (t->content.empty()) return;
    auto& list = by_first_[static_cast<unsigned char>(t->content[0])];
    list.push_back(t);
    std::stable_sort(list.begin(), list.end(),
                     [](const AddedToken* a, const AddedToken* b) { return a->content.size() > b->content.size(); });
    empty_ = false;
  }
  bool empty() const { return empty_; }

  // Appends the segments that cover text (empty text segments left out).
  void split(std::string_view s, std::vector<Segment>& out) const {
    std::size_t done = 0;  // text before this offset is already in `out`
    for (std::size_t pos = 0; pos < s.size(); ++pos) {
      const auto& list = by_first_[static_cast<unsigned char>(s[pos])];
      if (list.empty()) continue;
      const AddedToken* hit = nullptr;
      for (const AddedToken* t : list)
        if (s.compare(pos, t->content.size(), t->content) == 0) {
          hit = t;  // the longest: the list is sorted by length
          break;
        }
      if (!hit) continue;
      std::size_t start = pos, stop = pos + hit->content.size();
      if (hit->single_word && (!word_boundary_before(s, start) || !word_boundary_after(s, stop))) continue;
      if (hit->lstrip) {
        while (start > done) {
          std::size_t p = start - 1;
          while (p > done && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
          int len;
          if (!is_space_cp(bpe::decode_utf8(s, p, &len))) break;
          start = p;
        }
      }
      if (hit->rstrip) {
        int len;
        while (stop < s.size() && is_space_cp(bpe::decode_utf8(s, stop, &len))) stop += static_cast<std::size_t>(len);
      }
      if (start > done) out.push_back({done, start, -1});
      out.push_back({start, stop, hit->id});
      done = stop;
      pos = stop - 1;
    }
    if (done < s.size()) out.push_back({done, s.size(), -1});
  }

 private:
  static bool word_boundary_before(std::string_view s, std::size_t pos) {
    if (pos == 0) return true;
    std::size_t p = pos - 1;
    while (p > 0 && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
    int len;
    return !is_word_cp(bpe::decode_utf8(s, p, &len));
  }
  static bool word_boundary_after(std::string_view s, std::size_t pos) {
    int len;
    return pos == s.size() || !is_word_cp(bpe::decode_utf8(s, pos, &len));
  }
  std::vector<const AddedToken*> by_first_[256];
  bool empty_ = true;
};

// ---- pre-tokenizer stages, applied in order; ByteLevel is the last.
struct Stage {
  enum Kind { kSplit, kDigits, kByteLevel } kind;
  bpe::SplitPattern pattern = bpe::SplitPattern::kGpt2;  // kSplit, or kByteLevel with use_regex
  bool use_regex = false;                                // kByteLevel
  bool add_prefix_space = false;                         // kByteLevel
  bool individual_digits = false;                        // kDigits
};

// ---- the per-thread cache of piece -> ids, as tokenizers keeps one (its BPE_LOCAL_CACHE).
struct PieceCache {
  std::uint64_t owner = 0;
  std::unordered_map<std::string_view, std::pair<std::uint32_t, std::uint32_t>> map;  // -> (offset, count)
  std::vector<int> ids;
  std::vector<std::unique_ptr<char[]>> blocks;  // key storage; views into it stay valid until clear()
  std::size_t block_used = 0;
  static constexpr std::size_t kBlock = 1 << 20, kMaxEntries = 1 << 18, kMaxPiece = 256;

  void clear() {
    map.clear();
    ids.clear();
    blocks.clear();
    block_used = kBlock;
  }
  std::string_view store(std::string_view key) {
    if (blocks.empty() || block_used + key.size() > kBlock) {
      blocks.emplace_back(new char[kBlock]);
      block_used = 0;
    }
    char* p = blocks.back().get() + block_used;
    std::memcpy(p, key.data(), key.size());
    block_used += key.size();
    return {p, key.size()};
  }
};

std::atomic<std::uint64_t> next_uid{1};

[[noreturn]] void refuse(const std::string& path, const std::string& what) {
  throw UserError("tokenizer: " + path + ": " + what +
                  " (moin reads byte-level BPE tokenizer.json files as GPT-2, Llama-3, Qwen2 and SmolLM ship them;"
                  " see docs/tokenizers.md)");
}

class HfBpeTokenizer final : public TokenizerBackend {
 public:
  explicit HfBpeTokenizer(const std::string& path);

  std::vector<int> encode(std::string_view text, bool add_special) const override;
  std::string decode(const std::vector<int>& ids, bool skip_special) const override;
  std::string id_to_piece(int id) const override {
    if (id < 0 || id >= vocab_size) throw std::out_of_range("tokenizer: id " + std::to_string(id) + " out of range");
    return pieces_[static_cast<std::size_t>(id)];
  }

 private:
  void load_model(const json& m);
  void load_normalizer(const json& n);
  void load_pre_tokenizer(const json& p);
  void load_stage(const json& p);
  void load_post_processor(const json& p, const json& root);
  void load_decoder(const json& d);
  void find_special_ids(const json& root);
  int id_of(const std::string& content) const;
  void require_id(int id, const char* whose) const {
    if (id < 0 || id >= vocab_size) refuse(path_, std::string(whose) + " id " + std::to_string(id) + " is outside the vocabulary");
  }

  void pre_tokenize(std::string_view s, std::size_t stage, std::vector<int>& out) const;
  void bpe(std::string_view piece, std::vector<int>& out) const;
  void merge(std::string_view piece, std::vector<int>& out) const;

  std::string path_;
  std::uint64_t uid_ = next_uid++;
  // vocabulary
  std::vector<std::string> pieces_;   // id -> vocabulary string or added token content
  std::vector<std::string> decoded_;  // id -> bytes the ByteLevel decoder gives
  std::vector<char> special_;         // id -> an added token marked special
  std::unordered_map<std::string, int> vocab_bytes_;  // raw bytes -> id
  int byte_id_[256];
  int fallback_id_[256];  // <0xXX> tokens, for byte_fallback
  PairMap merges_;
  bool ignore_merges_ = false, byte_fallback_ = false, fuse_unk_ = false;
  int model_unk_ = -1;
  std::size_t vocab_entries_ = 0;
  // pipeline
  std::vector<std::unique_ptr<AddedToken>> added_;
  AddedMatcher raw_added_, normalized_added_;
  bool nfc_ = false;
  std::vector<Stage> stages_;
  std::vector<int> prefix_, suffix_;  // what the post-processor adds around a text
};

std::string type_of(const json& j) { return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : ""; }

HfBpeTokenizer::HfBpeTokenizer(const std::string& path) : path_(path) {
  kind = "tokenizer.json";
  json root;
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw UserError("tokenizer: cannot read " + path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    root = parse_json(text, "tokenizer: " + path);
  }
  if (!root.is_object()) refuse(path_, "not a JSON object");
  if (!root.contains("model") || !root["model"].is_object()) refuse(path_, "no \"model\" section");
  try {
    load_model(root["model"]);
    if (root.contains("added_tokens") && root["added_tokens"].is_array()) {
      for (const auto& a : root["added_tokens"]) {
        auto t = std::make_unique<AddedToken>();
        t->content = a.at("content").get<std::string>();
        t->id = a.at("id").get<int>();
        t->special = a.value("special", false);
        t->lstrip = a.value("lstrip", false);
        t->rstrip = a.value("rstrip", false);
        t->single_word = a.value("single_word", false);
        t->normalized = a.value("normalized", !t->special);
        if (t->id < 0) refuse(path_, "added token \"" + t->content + "\" has a negative id");
        added_.push_back(std::move(t));
      }
    }
    load_normalizer(root.value("normalizer", json()));
    load_pre_tokenizer(root.value("pre_tokenizer", json()));
    load_decoder(root.value("decoder", json()));

    // The id table covers the vocabulary and the added tokens.
    int max_id = static_cast<int>(pieces_.size()) - 1;
    for (const auto& t : added_) max_id = std::max(max_id, t->id);
    if (max_id < 0) refuse(path_, "the vocabulary is empty");
    // Real files number their tokens densely; a stray huge id would only allocate a huge table.
    const std::size_t entries = vocab_entries_ + added_.size();
    if (static_cast<std::size_t>(max_id) >= 2 * entries + 1024)
      refuse(path_, "id " + std::to_string(max_id) + " is far beyond the " + std::to_string(entries) + " tokens");
    vocab_size = max_id + 1;
    pieces_.resize(static_cast<std::size_t>(vocab_size));
    decoded_.resize(static_cast<std::size_t>(vocab_size));
    special_.assign(static_cast<std::size_t>(vocab_size), 0);
    for (const auto& t : added_) {
      auto i = static_cast<std::size_t>(t->id);
      pieces_[i] = t->content;
      special_[i] = t->special;
      // normalized tokens are matched after the normalizer, in their normalized form
      if (t->normalized && nfc_) t->content = bpe::nfc(t->content);
      (t->normalized ? normalized_added_ : raw_added_).add(t.get());
    }
    // The ByteLevel decoder: a token whose characters are all in the byte map gives those bytes,
    // any other token its own UTF-8 (decoders/byte_level.rs).
    for (std::size_t i = 0; i < pieces_.size(); ++i)
      if (!unmap_bytes(pieces_[i], &decoded_[i])) decoded_[i] = pieces_[i];

    load_post_processor(root.value("post_processor", json()), root);
    find_special_ids(root);
  } catch (const json::exception& e) {
    refuse(path_, std::string("unexpected layout: ") + e.what());
  }
}

void HfBpeTokenizer::load_model(const json& m) {
  std::string type = type_of(m);
  if (type.empty() && m.contains("merges")) type = "BPE";  // early files leave the type out
  if (type != "BPE")
    refuse(path_, "model type " + (type.empty() ? std::string("(none)") : type) + " is not supported, only BPE");
  if (!m.contains("vocab") || !m["vocab"].is_object()) refuse(path_, "the BPE model has no vocab object");
  if (m.contains("dropout") && m["dropout"].is_number() && m["dropout"].get<double>() > 0)
    refuse(path_, "BPE dropout is not supported");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(key) && m[key].is_string() && !m[key].get<std::string>().empty())
      refuse(path_, std::string("BPE ") + key + " is not supported (byte-level BPE has none)");
  ignore_merges_ = m.value("ignore_merges", false);
  byte_fallback_ = m.value("byte_fallback", false);
  fuse_unk_ = m.value("fuse_unk", false);

  std::unordered_map<std::string, int> vocab;  // vocabulary string -> id
  int max_id = -1;
  for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
    int id = it.value().get<int>();
    if (id < 0) refuse(path_, "vocabulary id " + std::to_string(id) + " is negative");
    vocab.emplace(it.key(), id);
    max_id = std::max(max_id, id);
  }
  vocab_entries_ = vocab.size();
  if (static_cast<std::size_t>(max_id) >= 2 * vocab.size() + 1024)
    refuse(path_, "vocabulary id " + std::to_string(max_id) + " is far beyond its " + std::to_string(vocab.size()) +
                      " entries");
  pieces_.assign(static_cast<std::size_t>(max_id + 1), "");
  std::string bytes;
  for (const auto& [piece, id] : vocab) {
    pieces_[static_cast<std::size_t>(id)] = piece;
    if (unmap_bytes(piece, &bytes)) vocab_bytes_.emplace(bytes, id);
  }
  const auto& bm = byte_map();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    char32_t cp = bm.to_cp[b];  // one or two UTF-8 bytes: cp < 0x200
    if (cp < 0x80) {
      s = std::string(1, static_cast<char>(cp));
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    auto it = vocab.find(s);
    byte_id_[b] = it == vocab.end() ? -1 : it->second;
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    auto f = vocab.find(hex);
    fallback_id_[b] = f == vocab.end() ? -1 : f->second;
  }
  if (m.contains("unk_token") && m["unk_token"].is_string()) {
    auto it = vocab.find(m["unk_token"].get<std::string>());
    if (it == vocab.end()) refuse(path_, "unk_token is not in the vocabulary");
    model_unk_ = it->second;
  }

  const json& merges = m.contains("merges") ? m["merges"] : json::array();
  merges_.reserve(merges.size());
  std::uint32_t rank = 0;
  for (const auto& e : merges) {
    std::string a, b;
    if (e.is_string()) {  // "a b" (tokenizers < 0.20)
      const auto& s = e.get_ref<const std::string&>();
      auto sp = s.find(' ', 1);
      if (sp == std::string::npos) refuse(path_, "merge \"" + s + "\" is not two tokens");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else {  // ["a", "b"]
      a = e.at(0).get<std::string>();
      b = e.at(1).get<std::string>();
    }
    auto ia = vocab.find(a), ib = vocab.find(b), im = vocab.find(a + b);
    if (ia == vocab.end() || ib == vocab.end() || im == vocab.end())
      refuse(path_, "merge \"" + a + " " + b + "\" names a token outside the vocabulary");
    merges_.insert(ia->second, ib->second, {rank++, static_cast<std::uint32_t>(im->second)});
  }
}

void HfBpeTokenizer::load_normalizer(const json& n) {
  if (n.is_null()) return;
  std::string type = type_of(n);
  if (type == "NFC") {
    nfc_ = true;
  } else if (type == "Sequence") {
    for (const auto& s : n.at("normalizers")) load_normalizer(s);
  } else {
    refuse(path_, "normalizer " + (type.empty() ? n.dump() : type) + " is not supported (only NFC or none)");
  }
}

void HfBpeTokenizer::load_stage(const json& p) {
  std::string type = type_of(p);
  Stage s{Stage::kByteLevel};
  if (type == "Sequence") {
    for (const auto& q : p.at("pretokenizers")) load_stage(q);
    return;
  }
  if (!stages_.empty() && stages_.back().kind == Stage::kByteLevel)
    refuse(path_, "pre-tokenizer " + type + " after ByteLevel is not supported");
  if (type == "ByteLevel") {
    s.kind = Stage::kByteLevel;
    s.use_regex = p.value("use_regex", true);
    s.add_prefix_space = p.value("add_prefix_space", false);
  } else if (type == "Split") {
    s.kind = Stage::kSplit;
    const json& pat = p.at("pattern");
    if (!pat.contains("Regex")) refuse(path_, "Split pre-tokenizer with a String pattern is not supported");
    std::string re = pat["Regex"].get<std::string>();
    if (!bpe::find_split_pattern(re, &s.pattern))
      refuse(path_, "Split regex " + re + " is not one moin implements (GPT-2's, Llama-3's or Qwen2's)");
    std::string behavior = p.value("behavior", "Isolated");
    if (behavior != "Isolated" || p.value("invert", false))
      refuse(path_, "Split behavior " + behavior + (p.value("invert", false) ? " (inverted)" : "") +
                        " is not supported, only Isolated");
  } else if (type == "Digits") {
    s.kind = Stage::kDigits;
    s.individual_digits = p.value("individual_digits", false);
  } else {
    refuse(path_, "pre-tokenizer " + (type.empty() ? p.dump() : type) +
                      " is not supported (ByteLevel, Split, Digits and Sequence are)");
  }
  stages_.push_back(s);
}

void HfBpeTokenizer::load_pre_tokenizer(const json& p) {
  if (!p.is_null()) load_stage(p);
  if (stages_.empty() || stages_.back().kind != Stage::kByteLevel)
    refuse(path_, "the pre-tokenizer has no ByteLevel step: not a byte-level BPE");
}

void HfBpeTokenizer::load_decoder(const json& d) {
  std::string type = type_of(d);
  if (type == "Sequence" && d.contains("decoders") && d["decoders"].size() == 1) type = type_of(d["decoders"][0]);
  if (type != "ByteLevel")
    refuse(path_, "decoder " + (type.empty() ? std::string("null") : type) + " is not supported, only ByteLevel");
}

void HfBpeTokenizer::load_post_processor(const json& p, const json& root) {
  if (p.is_null()) return;
  std::string type = type_of(p);
  if (type == "ByteLevel") return;  // offsets only
  if (type == "Sequence") {
    for (const auto& q : p.at("processors")) load_post_processor(q, root);
    return;
  }
  std::vector<int> pre, post;
  if (type == "TemplateProcessing") {
    bool seen_a = false;
    for (const auto& item : p.at("single")) {
      if (item.contains("Sequence")) {
        seen_a = true;
      } else {
        std::string name = item.at("SpecialToken").at("id").get<std::string>();
        const json& st = p.at("special_tokens").at(name);
        for (const auto& id : st.at("ids")) (seen_a ? post : pre).push_back(id.get<int>());
      }
    }
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    pre.push_back(p.at("cls").at(1).get<int>());
    post.push_back(p.at("sep").at(1).get<int>());
  } else {
    refuse(path_, "post-processor " + type + " is not supported");
  }
  for (int id : pre) require_id(id, "the post-processor's");
  for (int id : post) require_id(id, "the post-processor's");
  // A later processor wraps what the earlier ones made.
  prefix_.insert(prefix_.begin(), pre.begin(), pre.end());
  suffix_.insert(suffix_.end(), post.begin(), post.end());
}

int HfBpeTokenizer::id_of(const std::string& content) const {
  for (const auto& t : added_)
    if (t->content == content) return t->id;
  for (std::size_t i = 0; i < pieces_.size(); ++i)
    if (pieces_[i] == content) return static_cast<int>(i);
  return -1;
}

// bos/eos/pad/unk: tokenizer_config.json beside the file says (transformers reads it there); without it
// the post-processor's template tells BOS and EOS, and a common end-of-text token stands for EOS.
void HfBpeTokenizer::find_special_ids(const json& root) {
  unk = model_unk_;
  json config;
  auto config_path = std::filesystem::path(path_).parent_path() / "tokenizer_config.json";
  if (std::filesystem::is_regular_file(config_path)) {
    std::ifstream in(config_path);
    config = parse_json_or_discard(std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()));
    if (config.is_discarded()) config = json();
  }
  auto from_config = [&](const char* key, int* out) {
    if (!config.is_object() || !config.contains(key)) return false;
    const json& v = config[key];
    std::string content = v.is_string() ? v.get<std::string>()
                          : v.is_object() && v.contains("content") ? v["content"].get<std::string>()
                                                                   : "";
    *out = content.empty() ? -1 : id_of(content);
    return true;
  };
  if (!from_config("bos_token", &bos)) bos = prefix_.empty() ? -1 : prefix_.front();
  if (!from_config("eos_token", &eos)) {
    eos = suffix_.empty() ? -1 : suffix_.back();
    for (const char* name : {"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"})
      if (eos < 0) eos = id_of(name);
  }
  if (!from_config("pad_token", &pad) && root.contains("padding") && root["padding"].is_object())
    pad = root["padding"].value("pad_id", -1);
  if (pad >= vocab_size) pad = -1;
  int u;
  if (from_config("unk_token", &u) && u >= 0) unk = u;
}

// ---- encoding

std::vector<int> HfBpeTokenizer::encode(std::string_view text, bool add_special) const {
  std::vector<int> out;
  out.reserve(text.size() / 3 + 8);
  if (add_special) out = prefix_;
  std::vector<Segment> raw, normalized;
  raw_added_.split(text, raw);
  for (const auto& r : raw) {
    if (r.id >= 0) {
      out.push_back(r.id);
      continue;
    }
    std::string_view piece = text.substr(r.begin, r.end - r.begin);
    std::string norm;
    if (nfc_ && !bpe::is_nfc_quick(piece)) {
      norm = bpe::nfc(piece);
      piece = norm;
    }
    normalized.clear();
    if (normalized_added_.empty())
      normalized.push_back({0, piece.size(), -1});
    else
      normalized_added_.split(piece, normalized);
    for (const auto& n : normalized) {
      if (n.id >= 0)
        out.push_back(n.id);
      else
        pre_tokenize(piece.substr(n.begin, n.end - n.begin), 0, out);
    }
  }
  if (add_special) out.insert(out.end(), suffix_.begin(), suffix_.end());
  return out;
}

// Splits s with stage `stage` and hands every piece to the next stage; after the last, to BPE.
void HfBpeTokenizer::pre_tokenize(std::string_view s, std::size_t stage, std::vector<int>& out) const {
  if (s.empty()) return;
  const Stage& st = stages_[stage];
  switch (st.kind) {
    case Stage::kSplit:
      for (std::size_t pos = 0; pos < s.size();) {
        std::size_t end = bpe::match_split(st.pattern, s, pos);
        pre_tokenize(s.substr(pos, end - pos), stage + 1, out);
        pos = end;
      }
      return;
    case Stage::kDigits:
      for (std::size_t pos = 0; pos < s.size();) {
        int len;
        bool digit = bpe::char_class(bpe::decode_utf8(s, pos, &len)) & bpe::kNumber;
        std::size_t end = pos + static_cast<std::size_t>(len);
        if (!digit || !st.individual_digits)
          while (end < s.size()) {
            bool d = bpe::char_class(bpe::decode_utf8(s, end, &len)) & bpe::kNumber;
            if (d != digit) break;
            end += static_cast<std::size_t>(len);
          }
        pre_tokenize(s.substr(pos, end - pos), stage + 1, out);
        pos = end;
      }
      return;
    case Stage::kByteLevel: {
      std::string prefixed;
      if (st.add_prefix_space && s[0] != ' ') {
        prefixed.reserve(s.size() + 1);
        prefixed += ' ';
        prefixed += s;
        s = prefixed;
      }
      if (!st.use_regex) {
        bpe(s, out);
        return;
      }
      for (std::size_t pos = 0; pos < s.size();) {
        std::size_t end = bpe::match_split(bpe::SplitPattern::kGpt2, s, pos);
        bpe(s.substr(pos, end - pos), out);
        pos = end;
      }
      return;
    }
  }
}

void HfBpeTokenizer::bpe(std::string_view piece, std::vector<int>& out) const {
  if (piece.size() > PieceCache::kMaxPiece) {
    merge(piece, out);
    return;
  }
  thread_local PieceCache cache;
  if (cache.owner != uid_) {
    cache.clear();
    cache.owner = uid_;
  }
  auto it = cache.map.find(piece);
  if (it != cache.map.end()) {
    out.insert(out.end(), cache.ids.begin() + it->second.first, cache.ids.begin() + it->second.first + it->second.second);
    return;
  }
  std::size_t before = out.size();
  merge(piece, out);
  if (cache.map.size() >= PieceCache::kMaxEntries) cache.clear();
  auto offset = static_cast<std::uint32_t>(cache.ids.size());
  cache.ids.insert(cache.ids.end(), out.begin() + static_cast<std::ptrdiff_t>(before), out.end());
  cache.map.emplace(cache.store(piece), std::make_pair(offset, static_cast<std::uint32_t>(out.size() - before)));
}

// BPE of one piece: repeatedly merge the adjacent pair of lowest rank, leftmost first (models/bpe/word.rs).
void HfBpeTokenizer::merge(std::string_view piece, std::vector<int>& out) const {
  if (ignore_merges_) {  // Llama-3: a piece that is a token is that token
    auto it = vocab_bytes_.find(std::string(piece));
    if (it != vocab_bytes_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<int> sym;
  sym.reserve(piece.size());
  bool last_unk = false;
  for (char ch : piece) {
    auto b = static_cast<unsigned char>(ch);
    if (byte_id_[b] >= 0) {
      sym.push_back(byte_id_[b]);
      last_unk = false;
      continue;
    }
    // tokenizers' byte_fallback looks up <0xXX> of the UTF-8 bytes of the byte's mapped character
    if (byte_fallback_) {
      char32_t cp = byte_map().to_cp[b];
      unsigned char u[2] = {static_cast<unsigned char>(cp), 0};
      int n = 1;
      if (cp >= 0x80) {
        u[0] = static_cast<unsigned char>(0xC0 | (cp >> 6));
        u[1] = static_cast<unsigned char>(0x80 | (cp & 0x3F));
        n = 2;
      }
      bool all = true;
      for (int i = 0; i < n; ++i) all = all && fallback_id_[u[i]] >= 0;
      if (all) {
        for (int i = 0; i < n; ++i) sym.push_back(fallback_id_[u[i]]);
        last_unk = false;
        continue;
      }
    }
    if (model_unk_ >= 0 && !(fuse_unk_ && last_unk)) sym.push_back(model_unk_);
    last_unk = model_unk_ >= 0;  // without an unk token the byte is dropped, as tokenizers does
  }

  constexpr std::uint32_t kNone = ~0u;
  const std::size_t n = sym.size();
  if (n <= 64) {
    // Short pieces (nearly all): keep each adjacent pair's rank, scan for the lowest, merge, update two.
    std::uint32_t rank[64];
    auto rank_of = [&](std::size_t i) {
      const auto* v = merges_.find(sym[i], sym[i + 1]);
      return v ? v->rank : kNone;
    };
    std::size_t m = n;
    for (std::size_t i = 0; i + 1 < m; ++i) rank[i] = rank_of(i);
    while (m > 1) {
      std::size_t best = 0;
      for (std::size_t i = 1; i + 1 < m; ++i)
        if (rank[i] < rank[best]) best = i;
      if (rank[best] == kNone) break;
      sym[best] = static_cast<int>(merges_.find(sym[best], sym[best + 1])->id);
      for (std::size_t i = best + 1; i + 1 < m; ++i) sym[i] = sym[i + 1];
      for (std::size_t i = best + 1; i + 2 < m; ++i) rank[i] = rank[i + 1];
      --m;
      if (best > 0) rank[best - 1] = rank_of(best - 1);
      if (best + 1 < m) rank[best] = rank_of(best);
    }
    out.insert(out.end(), sym.begin(), sym.begin() + static_cast<std::ptrdiff_t>(m));
    return;
  }
  // Long pieces: a heap of candidate merges over a linked list, stale entries skipped when popped.
  struct Cand {
    std::uint32_t rank, pos, id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<int> prev(n), next(n);
  std::vector<char> alive(n, 1);
  for (std::size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int>(i + 1) : -1;
  }
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int i) {
    if (i < 0 || next[i] < 0) return;
    if (const auto* v = merges_.find(sym[i], sym[next[i]])) heap.push({v->rank, static_cast<std::uint32_t>(i), v->id});
  };
  for (std::size_t i = 0; i + 1 < n; ++i) push(static_cast<int>(i));
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    int i = static_cast<int>(c.pos);
    if (!alive[i] || next[i] < 0) continue;
    const auto* v = merges_.find(sym[i], sym[next[i]]);
    if (!v || v->id != c.id) continue;
    int j = next[i];
    sym[i] = static_cast<int>(c.id);
    alive[j] = 0;
    next[i] = next[j];
    if (next[j] >= 0) prev[next[j]] = i;
    push(prev[i]);
    push(i);
  }
  for (int i = 0; i >= 0; i = next[i]) out.push_back(sym[i]);
}

std::string HfBpeTokenizer::decode(const std::vector<int>& ids, bool skip_special) const {
  std::string out;
  for (int id : ids) {
    if (id < 0 || id >= vocab_size) throw std::out_of_range("tokenizer: id " + std::to_string(id) + " out of range");
    if (skip_special && special_[static_cast<std::size_t>(id)]) continue;
    out += decoded_[static_cast<std::size_t>(id)];
  }
  return out;
}

}  // namespace

std::shared_ptr<const TokenizerBackend> load_tokenizer_json(const std::string& json_path) {
  return std::make_shared<HfBpeTokenizer>(json_path);
}

}  // namespace moin
