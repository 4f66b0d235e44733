// The safetensors reader/writer: round trips of every dtype (bit-exact), the torch conversion, the shard
// index, and one UserError naming the file and the tensor for each kind of corrupt file.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>

#include "moin/core/error.h"
#include "moin/model/safetensors.h"
#include "moin/model/safetensors_torch.h"
#include "test_util.h"

namespace {

using moin::UserError;
using moin::test::TempDir;
namespace st = moin::st;

// A file from a literal header and data section: 8-byte little-endian length, header, data.
std::string raw_file(const std::string& header, const std::string& data, std::uint64_t len_override = ~0ull) {
  std::uint64_t n = len_override == ~0ull ? header.size() : len_override;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

// Opening `bytes` must throw a UserError whose message names the file and contains each of `parts`.
void expect_error(const std::string& bytes, const std::vector<std::string>& parts) {
  TempDir dir;
  std::string path = dir / "bad.safetensors";
  moin::test::write_file(path, bytes);
  try {
    st::File::open(path);
    ADD_FAILURE() << "opened a corrupt file; expected an error containing " << parts.at(0);
  } catch (const UserError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "missing '" << p << "' in: " << msg;
  }
}

const std::string kData8(8, '\x01');  // data of one F32 [2] tensor

TEST(Safetensors, WriteThenOpenEveryDTypeBitExact) {
  TempDir dir;
  std::string path = dir / "all.safetensors";
  const st::DType all[] = {st::DType::F64, st::DType::F32, st::DType::F16, st::DType::BF16, st::DType::I64,
                           st::DType::I32, st::DType::I16, st::DType::I8,  st::DType::U8,   st::DType::BOOL};
  std::vector<std::string> blobs;
  std::vector<std::pair<std::string, st::TensorView>> views;
  std::mt19937 rng(7);
  for (auto d : all) {
    std::vector<std::int64_t> shape = {3, 5};
    std::string b(15 * st::dtype_size(d), '\0');
    for (auto& c : b) c = static_cast<char>(rng());
    if (d == st::DType::BOOL)
      for (auto& c : b) c = static_cast<char>(c & 1);
    blobs.push_back(b);
  }
  for (std::size_t i = 0; i < std::size(all); ++i)
    views.push_back({std::string("t_") + st::dtype_name(all[i]), {all[i], {3, 5}, blobs[i].data(), blobs[i].size()}});
  views.push_back({"scalar", {st::DType::F32, {}, blobs[1].data(), 4}});
  views.push_back({"empty", {st::DType::F32, {0, 7}, nullptr, 0}});
  st::write(path, views, {{"format", "pt"}, {"note", "x"}});

  auto f = st::File::open(path);
  ASSERT_EQ(f.tensors().size(), views.size());
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "x");
  for (std::size_t i = 0; i < views.size(); ++i) {
    const auto& [name, v] = views[i];
    const auto& t = f.at(name);
    EXPECT_EQ(f.tensors()[i].name, name) << "header keeps the order given";
    EXPECT_EQ(t.dtype, v.dtype);
    EXPECT_EQ(t.shape, v.shape);
    ASSERT_EQ(t.nbytes(), v.nbytes);
    if (v.nbytes) {
      EXPECT_EQ(std::memcmp(f.data(t), v.data, v.nbytes), 0) << name;
      EXPECT_EQ((reinterpret_cast<std::uintptr_t>(f.data(t))) % st::dtype_size(t.dtype), 0u) << name << " aligned";
    }
  }
  EXPECT_EQ(f.at("scalar").numel(), 1u);
  EXPECT_EQ(f.at("empty").numel(), 0u);
  // The header is space-padded to a multiple of 8 bytes.
  auto bytes = moin::test::read_file(path);
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes[8 + n - 1] == ' ' || bytes[8 + n - 1] == '}', true);
  // No temporaries beside the file (atomic write).
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(Safetensors, TorchRoundTripEveryDType) {
  TempDir dir;
  std::string path = dir / "torch.safetensors";
  torch::manual_seed(0);
  auto base = torch::randn({4, 6}) * 100;
  std::vector<std::pair<std::string, torch::Tensor>> in = {
      {"f64", base.to(torch::kFloat64)},
      {"f32", base},
      {"f16", base.to(torch::kFloat16)},
      {"bf16", base.to(torch::kBFloat16)},
      {"i64", base.to(torch::kInt64) * 1000003},
      {"i32", base.to(torch::kInt32)},
      {"i16", base.to(torch::kInt16)},
      {"i8", base.clamp(-128, 127).to(torch::kInt8)},
      {"u8", base.abs().clamp(0, 255).to(torch::kUInt8)},
      {"bool", base > 0},
      {"transposed", base.t()},  // non-contiguous: saved as its logical (contiguous) layout
      {"scalar", torch::tensor(3.5)},
  };
  st::save(path, in, {{"format", "pt"}});
  auto out = st::load(path);
  ASSERT_EQ(out.size(), in.size());
  for (const auto& [name, t] : in) {
    const auto& u = out.at(name);
    EXPECT_EQ(u.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(u.sizes(), t.sizes()) << name;
    EXPECT_TRUE(u.is_contiguous());
    if (t.scalar_type() == torch::kFloat16 || t.scalar_type() == torch::kBFloat16) {
      EXPECT_TRUE(torch::equal(u.view(torch::kInt16), t.contiguous().view(torch::kInt16))) << name << " bits";
    } else {
      EXPECT_TRUE(torch::equal(u, t)) << name;
    }
  }
  EXPECT_EQ(st::File::open(path).metadata().at("format"), "pt");
}

TEST(Safetensors, BoolBytesOtherThanOneReadAsTrue) {
  TempDir dir;
  std::string path = dir / "b.safetensors";
  moin::test::write_file(path, raw_file(R"({"b":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})",
                                        std::string("\x00\x02\xff", 3)));
  auto b = st::load(path).at("b");
  EXPECT_TRUE(torch::equal(b, torch::tensor({false, true, true})));
}

TEST(Safetensors, SaveRejectsUnsupportedDType) {
  TempDir dir;
  try {
    st::save(dir / "c.safetensors", {{"cplx", torch::zeros({2}, torch::kComplexFloat)}});
    FAIL() << "complex tensor saved";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("cplx"), std::string::npos);
  }
}

TEST(Safetensors, MissingTensorNamesFileAndTensor) {
  TempDir dir;
  std::string path = dir / "m.safetensors";
  st::save(path, {{"a", torch::zeros({2})}});
  auto f = st::File::open(path);
  EXPECT_EQ(f.find("b"), nullptr);
  try {
    f.at("b");
    FAIL();
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": tensor b missing"), std::string::npos) << e.what();
  }
}

TEST(Safetensors, MissingFileIsAUserError) {
  EXPECT_THROW(st::File::open("/nonexistent/x.safetensors"), UserError);
}

// ---- each corruption: one UserError naming the file and the tensor.
TEST(SafetensorsCorrupt, TooShort) { expect_error("abc", {"too short"}); }
TEST(SafetensorsCorrupt, HeaderLengthBeyondFile) {
  expect_error(raw_file("{}", "", 1000), {"header length 1000"});
}
TEST(SafetensorsCorrupt, AbsurdHeaderLength) {
  expect_error(raw_file("{}", "", 0xffffffffffffff00ull), {"header length"});
}
TEST(SafetensorsCorrupt, HeaderNotJson) { expect_error(raw_file("{\"a\":", ""), {"not valid JSON"}); }
TEST(SafetensorsCorrupt, HeaderNotObject) { expect_error(raw_file("[1,2]", ""), {"not a JSON object"}); }
TEST(SafetensorsCorrupt, EntryNotObject) { expect_error(raw_file(R"({"w":[1]})", ""), {"'w'", "not an object"}); }
TEST(SafetensorsCorrupt, UnknownDType) {
  expect_error(raw_file(R"({"w":{"dtype":"F8","shape":[2],"data_offsets":[0,8]}})", kData8), {"'w'", "F8"});
}
TEST(SafetensorsCorrupt, MissingDType) {
  expect_error(raw_file(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", kData8), {"'w'", "dtype"});
}
TEST(SafetensorsCorrupt, NonIntegerShape) {
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", kData8), {"'w'", "non-integer"});
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", kData8), {"'w'", "non-integer"});
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", kData8), {"'w'", "shape"});
}
TEST(SafetensorsCorrupt, NegativeShape) {
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", kData8), {"'w'", "out-of-range"});
}
TEST(SafetensorsCorrupt, OverflowingShape) {
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", kData8),
               {"'w'", "overflows"});
}
TEST(SafetensorsCorrupt, MissingOrBadOffsets) {
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":[2]}})", kData8), {"'w'", "data_offsets"});
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", kData8), {"'w'", "data_offsets"});
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8.5]}})", kData8), {"'w'", "data_offsets"});
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", kData8), {"'w'", "data_offsets"});
}
TEST(SafetensorsCorrupt, BeginAfterEnd) {
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", kData8), {"'w'", "begin 8 > end 0"});
}
TEST(SafetensorsCorrupt, OffsetsBeyondData) {
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", kData8), {"'w'", "beyond"});
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551608,18446744073709551615]}})",
                        kData8),
               {"'w'"});
}
TEST(SafetensorsCorrupt, Overlap) {
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                        kData8),
               {"'b'", "overlaps tensor 'a'"});
}
TEST(SafetensorsCorrupt, SpanDisagreesWithShape) {
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", kData8), {"'w'", "needs 12"});
}
TEST(SafetensorsCorrupt, GapAndTrailingBytes) {
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", kData8), {"'w'", "gap"});
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", kData8), {"not indexed"});
}
TEST(SafetensorsCorrupt, BadMetadata) {
  expect_error(raw_file(R"({"__metadata__":{"a":1}})", ""), {"__metadata__", "'a'"});
  expect_error(raw_file(R"({"__metadata__":"x"})", ""), {"__metadata__"});
}

TEST(Safetensors, ValidHandWrittenFilesOpen) {
  TempDir dir;
  std::string path = dir / "ok.safetensors";
  // Trailing spaces in the header, an empty tensor between two others, metadata, whitespace before '{'.
  moin::test::write_file(path, raw_file(R"( {"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                        R"("e":{"dtype":"I64","shape":[0,3],"data_offsets":[4,4]},)"
                                        R"("b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}   )",
                                        kData8));
  auto f = st::File::open(path);
  EXPECT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.metadata().at("k"), "v");
  EXPECT_EQ(f.at("b").begin, 4u);
  auto t = st::load(path);
  EXPECT_EQ(t.at("e").sizes(), (std::vector<std::int64_t>{0, 3}));
  EXPECT_EQ(t.at("b")[3].item<int>(), 1);
}

TEST(SafetensorsShards, IndexAndCheckpointLoad) {
  TempDir dir;
  st::save(dir / "model-00001-of-00002.safetensors", {{"a", torch::ones({2})}, {"x", torch::ones({1})}});
  st::save(dir / "model-00002-of-00002.safetensors", {{"b", torch::zeros({3}, torch::kInt64)}});
  moin::test::write_file(dir / "model.safetensors.index.json",
                         R"({"metadata":{"total_size":28},"weight_map":{"a":"model-00001-of-00002.safetensors",)"
                         R"("b":"model-00002-of-00002.safetensors"}})");
  auto idx = st::read_shard_index(dir / "model.safetensors.index.json");
  EXPECT_EQ(idx.size(), 2u);
  EXPECT_EQ(idx.at("b"), "model-00002-of-00002.safetensors");
  auto all = st::load_checkpoint(dir.path.string());
  EXPECT_EQ(all.size(), 2u) << "only the tensors the index names";
  EXPECT_TRUE(torch::equal(all.at("b"), torch::zeros({3}, torch::kInt64)));

  auto bad = [&](const std::string& text, const std::string& part) {
    std::string p = dir / "bad.index.json";
    moin::test::write_file(p, text);
    try {
      st::read_shard_index(p);
      ADD_FAILURE() << text;
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  bad("{", "JSON");
  bad("[]", "object");
  bad(R"({"weight_map":[]})", "weight_map");
  bad(R"({"weight_map":{"a":3}})", "'a'");
  bad(R"({"weight_map":{"a":"../x.safetensors"}})", "'a'");
  bad(R"({"weight_map":{"a":"/etc/passwd"}})", "'a'");
  moin::test::write_file(dir / "missing.index.json", R"({"weight_map":{"zz":"model-00002-of-00002.safetensors"}})");
  EXPECT_THROW(st::load_checkpoint(dir / "missing.index.json"), UserError);
}

}  // namespace
