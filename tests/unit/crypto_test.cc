#include <gtest/gtest.h>

#include <set>

#include "crypto/random.h"

namespace fleet::crypto {
namespace {

TEST(Random, HexIsRightLengthAndDistinct) {
  ASSERT_TRUE(Init());
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    std::string h = RandomHex(8);
    ASSERT_EQ(h.size(), 16u);
    EXPECT_EQ(h.find_first_not_of("0123456789abcdef"), std::string::npos);
    seen.insert(h);
  }
  EXPECT_EQ(seen.size(), 100u);
}

TEST(ConstantTimeEqual, ComparesContentAndLength) {
  ASSERT_TRUE(Init());
  EXPECT_TRUE(ConstantTimeEqual("secret", "secret"));
  EXPECT_FALSE(ConstantTimeEqual("secret", "secreT"));
  EXPECT_FALSE(ConstantTimeEqual("secret", "secret2"));
  EXPECT_TRUE(ConstantTimeEqual("", ""));
}

}  // namespace
}  // namespace fleet::crypto
