// .npy files: byte-identical to numpy's np.save for the same arrays, and robust reading.
#include <gtest/gtest.h>

#include "moin/core/error.h"
#include "moin/core/npy.h"
#include "test_util.h"

using namespace moin;

TEST(Npy, BytesMatchNumpy) {
  moin::test::TempDir dir;
  std::vector<float> a(12);
  for (int i = 0; i < 12; ++i) a[i] = float(i);
  npy::save(dir / "a.npy", {3, 4}, a.data());
  auto bytes = moin::test::read_file(dir / "a.npy");
  // np.save(f, np.arange(12, dtype="<f4").reshape(3, 4)): a 128-byte header, then the data.
  std::string header = std::string("\x93NUMPY\x01\x00v\x00", 10) +
                       "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }" + std::string(58, ' ') + "\n";
  ASSERT_EQ(bytes.size(), 176u);
  EXPECT_EQ(bytes.substr(0, 128), header);
  std::vector<std::int32_t> b = {5, -1, 7};
  npy::save(dir / "b.npy", {3}, b.data());
  bytes = moin::test::read_file(dir / "b.npy");
  ASSERT_EQ(bytes.size(), 140u);
  EXPECT_EQ(bytes.substr(0, 128), std::string("\x93NUMPY\x01\x00v\x00", 10) +
                                      "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }" +
                                      std::string(60, ' ') + "\n");
  auto back = npy::load_i32(dir / "b.npy");
  EXPECT_EQ(back.shape, (std::vector<std::int64_t>{3}));
  EXPECT_EQ(back.data, b);
  auto fa = npy::load_f32(dir / "a.npy");
  EXPECT_EQ(fa.shape, (std::vector<std::int64_t>{3, 4}));
  EXPECT_EQ(fa.data, a);
}

TEST(Npy, BadFilesAreUserErrors) {
  moin::test::TempDir dir;
  std::vector<float> a = {1, 2};
  npy::save(dir / "a.npy", {2}, a.data());
  EXPECT_THROW(npy::load_i32(dir / "a.npy"), UserError);  // wrong dtype
  auto bytes = moin::test::read_file(dir / "a.npy");
  moin::test::write_file(dir / "t.npy", bytes.substr(0, bytes.size() - 1));
  EXPECT_THROW(npy::load_f32(dir / "t.npy"), UserError);
  moin::test::write_file(dir / "x.npy", "not numpy at all");
  EXPECT_THROW(npy::load_f32(dir / "x.npy"), UserError);
  EXPECT_THROW(npy::load_f32(dir / "missing.npy"), UserError);
}
