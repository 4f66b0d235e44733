// Randomized corruption of safetensors files under AddressSanitizer + UBSan. Every mutated file must
// either be accepted with every tensor inside the data section (each byte is read, on an exact-size heap
// buffer so an overrun is an ASan report) or be rejected with a UserError. Anything else fails: another
// exception type, a sanitizer report, a crash. MOIN_FUZZ_CASES=N runs more cases (default 5000).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "moin/core/error.h"
#include "moin/model/safetensors.h"
#include "test_util.h"

namespace {

namespace st = moin::st;
using Bytes = std::vector<std::uint8_t>;

Bytes valid_file(const std::string& dir) {
  std::vector<float> a(6, 1.5f);
  std::vector<std::uint16_t> b(5, 0x3c00);
  std::vector<std::int64_t> c(3, -7);
  std::vector<std::uint8_t> d = {0, 1, 1};
  std::string path = dir + "/base.safetensors";
  st::write(path,
            {{"model.layers.0.weight", {st::DType::F32, {2, 3}, a.data(), a.size() * 4}},
             {"bias", {st::DType::BF16, {5}, b.data(), b.size() * 2}},
             {"ids", {st::DType::I64, {3}, c.data(), c.size() * 8}},
             {"mask", {st::DType::BOOL, {3, 1}, d.data(), d.size()}},
             {"empty", {st::DType::F16, {0, 4}, nullptr, 0}}},
            {{"format", "pt"}, {"step", "12"}});
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

std::uint64_t header_len(const Bytes& f) {
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | f[i];
  return n;
}

Bytes with_header(const std::string& header, const Bytes& data, bool pad) {
  std::string h = header;
  if (pad) h.append((8 - h.size() % 8) % 8, ' ');
  Bytes out(8);
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(h.size() >> (8 * i));
  out.insert(out.end(), h.begin(), h.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

nlohmann::json random_value(std::mt19937_64& rng, std::uint64_t data_size) {
  switch (rng() % 14) {
    case 0: return -1;
    case 1: return 0;
    case 2: return 1;
    case 3: return 4294967296ull;
    case 4: return 9223372036854775807ll;
    case 5: return 18446744073709551615ull;
    case 6: return 1.5;
    case 7: return "x";
    case 8: return nullptr;
    case 9: return nlohmann::json::array();
    case 10: return nlohmann::json::object();
    case 11: return data_size;
    case 12: return data_size + 1;
    default: return rng() % (data_size + 16);
  }
}

// One structural mutation of the JSON header: plausible-looking files that exercise each validation.
Bytes mutate_json(const Bytes& base, std::mt19937_64& rng) {
  std::uint64_t n = header_len(base);
  auto header = nlohmann::ordered_json::parse(base.begin() + 8, base.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  Bytes data(base.begin() + 8 + static_cast<std::ptrdiff_t>(n), base.end());
  std::vector<std::string> names;
  for (auto& [k, v] : header.items()) names.push_back(k);
  const std::string name = names[rng() % names.size()];
  const char* dtypes[] = {"F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "f32", ""};
  int ops = 1 + static_cast<int>(rng() % 3);
  for (int op = 0; op < ops && header.is_object(); ++op) {
    auto& e = header[name];  // looked up again: an insertion below moves the entries
    switch (rng() % 12) {
      case 0: e = random_value(rng, data.size()); break;  // the entry itself (or __metadata__) replaced
      case 1: if (e.is_object()) e["dtype"] = dtypes[rng() % std::size(dtypes)]; break;
      case 2: if (e.is_object() && e.contains("shape") && e["shape"].is_array() && !e["shape"].empty())
                e["shape"][rng() % e["shape"].size()] = random_value(rng, data.size());
              break;
      case 3: if (e.is_object()) e["shape"] = nlohmann::json::array({rng() % 9, rng() % 3}); break;
      case 4: if (e.is_object() && e.contains("data_offsets") && e["data_offsets"].is_array() &&
                  e["data_offsets"].size() == 2)
                e["data_offsets"][rng() % 2] = random_value(rng, data.size());
              break;
      case 5: if (e.is_object()) e["data_offsets"] = random_value(rng, data.size()); break;
      case 6: if (e.is_object() && !e.empty()) {
                auto it = e.begin();
                std::advance(it, static_cast<std::ptrdiff_t>(rng() % e.size()));
                e.erase(it);
              }
              break;
      case 7: header["extra" + std::to_string(rng() % 3)] = {{"dtype", "U8"}, {"shape", {rng() % 5}},
                                                             {"data_offsets", {rng() % 40, rng() % 40}}};
              break;
      case 8: header["__metadata__"] = rng() % 2 ? nlohmann::ordered_json{{"k", rng() % 2 ? "v" : "1"}}
                                                 : nlohmann::ordered_json{{"k", 1}};
              break;
      case 9: data.resize(rng() % (data.size() + 9)); break;
      case 10: data.push_back(static_cast<std::uint8_t>(rng())); break;
      default: header = rng() % 2 ? nlohmann::ordered_json::array() : nlohmann::ordered_json(e); break;
    }
  }
  return with_header(header.dump(), data, rng() % 2);
}

Bytes mutate(const Bytes& base, std::mt19937_64& rng, int* kind) {
  Bytes f = base;
  std::uint64_t n = header_len(base);
  *kind = static_cast<int>(rng() % 6);
  switch (*kind) {
    case 0: {  // flip bytes of the length field
      int flips = 1 + static_cast<int>(rng() % 2);
      for (int i = 0; i < flips; ++i) f[rng() % 8] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
      break;
    }
    case 1: {  // flip or overwrite bytes of the header text
      int flips = 1 + static_cast<int>(rng() % 4);
      for (int i = 0; i < flips; ++i) {
        auto& b = f[8 + rng() % n];
        b = rng() % 2 ? static_cast<std::uint8_t>(b ^ (1u << (rng() % 8))) : static_cast<std::uint8_t>(rng());
      }
      break;
    }
    case 2: {  // change one digit of the header (offsets, shapes: plausible but wrong numbers)
      std::vector<std::size_t> digits;
      for (std::size_t i = 8; i < 8 + n; ++i)
        if (f[i] >= '0' && f[i] <= '9') digits.push_back(i);
      f[digits[rng() % digits.size()]] = static_cast<std::uint8_t>('0' + rng() % 10);
      break;
    }
    case 3: f.resize(rng() % f.size()); break;  // truncation
    case 4: {  // bytes appended or the data section flipped (must stay accepted: data is opaque)
      if (rng() % 2) f.push_back(0);
      else f[8 + n + rng() % (f.size() - 8 - n)] ^= 0xff;
      break;
    }
    default: f = mutate_json(base, rng); break;
  }
  return f;
}

// Writes the bytes to `path` and opens them through the mmap path, which must decide as parse() did.
void check_file(const std::string& path, const Bytes& f, bool parse_ok, int i, int kind) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(f.data()), static_cast<std::streamsize>(f.size()));
  }
  try {
    auto file = st::File::open(path);
    EXPECT_TRUE(parse_ok) << "case " << i << ": File::open accepted what parse rejected";
    std::uint64_t sum = 0;
    for (const auto& t : file.tensors())
      for (std::uint64_t b = 0; b < t.nbytes(); ++b) sum += file.data(t)[b];
    volatile std::uint64_t sink = sum;
    (void)sink;
  } catch (const moin::UserError& e) {
    EXPECT_FALSE(parse_ok) << "case " << i << ": File::open rejected what parse accepted: " << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "case " << i << " (kind " << kind << "): File::open threw a non-UserError: " << e.what();
  }
}

TEST(SafetensorsFuzz, CorruptFilesAreAcceptedInBoundsOrRejectedWithUserError) {
  moin::test::TempDir dir;
  const Bytes base = valid_file(dir.path.string());
  {
    auto layout = st::parse(base.data(), base.size(), "base");
    ASSERT_EQ(layout.tensors.size(), 5u);
  }
  int cases = 5000;
  if (const char* env = std::getenv("MOIN_FUZZ_CASES")) cases = std::atoi(env);
  std::mt19937_64 rng(20261122);
  int accepted = 0, rejected = 0;
  const std::string path = dir / "case.safetensors";
  for (int i = 0; i < cases; ++i) {
    int kind = -1;
    Bytes f = mutate(base, rng, &kind);
    // An exact-size heap copy: reading one byte past the end is an ASan report.
    auto* buf = new std::uint8_t[f.size() ? f.size() : 1];
    if (!f.empty()) std::memcpy(buf, f.data(), f.size());
    bool ok = false;
    try {
      auto layout = st::parse(buf, f.size(), "case");
      ok = true;
      std::uint64_t sum = 0;
      for (const auto& t : layout.tensors) {
        ASSERT_LE(t.begin, t.end) << "case " << i;
        ASSERT_LE(layout.data_offset + t.end, f.size()) << "case " << i;
        ASSERT_EQ(t.nbytes(), t.numel() * st::dtype_size(t.dtype)) << "case " << i;
        for (std::uint64_t b = t.begin; b < t.end; ++b) sum += buf[layout.data_offset + b];
      }
      volatile std::uint64_t sink = sum;
      (void)sink;
    } catch (const moin::UserError& e) {
      EXPECT_NE(std::string(e.what()).find("case"), std::string::npos) << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "case " << i << " (kind " << kind << "): not a UserError: " << e.what();
    }
    delete[] buf;

    // The memory-mapped path must agree on the same bytes (every 4th case: file writes are the slow part).
    if (i % 4 == 0) check_file(path, f, ok, i, kind);
    (ok ? accepted : rejected)++;
  }
  std::printf("fuzz: %d cases, %d accepted, %d rejected with UserError\n", cases, accepted, rejected);
  // The mutations must exercise both outcomes, or the test checks nothing.
  if (cases >= 1000) {
    EXPECT_GT(accepted, cases / 50);
    EXPECT_GT(rejected, cases / 2);
  }
}

}  // namespace
