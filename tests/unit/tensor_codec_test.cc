// Tensor payloads: round trip, and every class of malformed payload rejected with a reason.
#include <gtest/gtest.h>

#include <cmath>

#include "common/tensor_codec.h"
#include "proto/tensor_generated.h"

namespace fleet {
namespace {

v1::ModelSpec Spec(uint32_t in, std::vector<uint32_t> hidden, uint32_t out) {
  v1::ModelSpec s;
  s.set_type("mlp");
  s.set_input_dim(in);
  for (auto h : hidden) s.add_hidden(h);
  s.set_output_dim(out);
  return s;
}

std::vector<float> Iota(size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(i) * 0.5f - 3.0f;
  return v;
}

TEST(ModelLayout, MlpShapesAndOffsets) {
  auto layout = LayoutFor(Spec(5, {4}, 3));
  ASSERT_TRUE(layout.ok());
  ASSERT_EQ(layout->tensors.size(), 4u);
  EXPECT_EQ(layout->tensors[0].name, "fc0.weight");
  EXPECT_EQ(layout->tensors[0].shape, (std::vector<uint32_t>{4, 5}));
  EXPECT_EQ(layout->tensors[3].name, "fc1.bias");
  EXPECT_EQ(layout->tensors[3].offset, 20u + 4u + 12u);
  EXPECT_EQ(layout->total, 20u + 4u + 12u + 3u);
}

TEST(ModelLayout, RejectsUnknownTypeAndZeroDims) {
  auto s = Spec(5, {}, 3);
  s.set_type("transformer");
  EXPECT_FALSE(LayoutFor(s).ok());
  EXPECT_FALSE(LayoutFor(Spec(0, {}, 3)).ok());
  EXPECT_FALSE(LayoutFor(Spec(5, {0}, 3)).ok());
}

TEST(ModelLayout, InitialParametersAreDeterministicAndBounded) {
  auto layout = LayoutFor(Spec(16, {8}, 2));
  ASSERT_TRUE(layout.ok());
  auto a = InitialParameters(*layout, 7), b = InitialParameters(*layout, 7),
       c = InitialParameters(*layout, 8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  for (size_t i = 0; i < 16 * 8; ++i) EXPECT_LE(std::fabs(a[i]), 0.25f);  // 1/sqrt(16)
}

TEST(TensorCodec, RoundTripIsExactAndAligned) {
  auto layout = LayoutFor(Spec(7, {5}, 3));
  ASSERT_TRUE(layout.ok());
  auto params = Iota(layout->total);
  std::string buf = EncodeParameters(*layout, params.data());
  auto views = DecodeParameters(buf, *layout);
  ASSERT_TRUE(views.ok()) << views.status().ToString();
  EXPECT_EQ(Flatten(*views, *layout), params);
  for (const auto& v : *views) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data) % 16, 0u) << v.slot->name;
    // Zero-copy: the view points into the buffer.
    EXPECT_GE(reinterpret_cast<const char*>(v.data), buf.data());
    EXPECT_LT(reinterpret_cast<const char*>(v.data), buf.data() + buf.size());
  }
}

TEST(TensorCodec, RejectsWrongShape) {
  auto small = LayoutFor(Spec(7, {5}, 3));
  auto big = LayoutFor(Spec(7, {6}, 3));
  auto params = Iota(small->total);
  std::string buf = EncodeParameters(*small, params.data());
  auto views = DecodeParameters(buf, *big);
  ASSERT_FALSE(views.ok());
  EXPECT_NE(views.status().message().find("fc0.weight' has shape [5x7], expected [6x7]"),
            std::string::npos)
      << views.status().message();
}

TEST(TensorCodec, RejectsWrongTensorCount) {
  auto one = LayoutFor(Spec(7, {}, 3));
  auto two = LayoutFor(Spec(7, {5}, 3));
  auto params = Iota(one->total);
  auto views = DecodeParameters(EncodeParameters(*one, params.data()), *two);
  ASSERT_FALSE(views.ok());
  EXPECT_NE(views.status().message().find("has 2 tensors"), std::string::npos);
}

TEST(TensorCodec, RejectsNanAndInf) {
  auto layout = LayoutFor(Spec(4, {}, 2));
  for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    auto params = Iota(layout->total);
    params[3] = bad;
    auto views = DecodeParameters(EncodeParameters(*layout, params.data()), *layout);
    ASSERT_FALSE(views.ok());
    EXPECT_NE(views.status().message().find("non-finite value at index 3"), std::string::npos);
  }
}

TEST(TensorCodec, RejectsGarbageTruncationAndBitFlips) {
  auto layout = LayoutFor(Spec(6, {4}, 2));
  auto params = Iota(layout->total);
  std::string good = EncodeParameters(*layout, params.data());
  EXPECT_FALSE(DecodeParameters("", *layout).ok());
  EXPECT_FALSE(DecodeParameters("not a tensor list at all", *layout).ok());
  EXPECT_FALSE(DecodeParameters(good.substr(0, good.size() / 2), *layout).ok());
  // Corrupt every byte of the header region in turn: never a crash, never a silent accept of a
  // payload whose structure changed.
  for (size_t i = 0; i < 64 && i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x5a);
    auto views = DecodeParameters(bad, *layout);
    if (views.ok()) {
      // A flip inside float data can still decode; the values then differ, the layout does not.
      EXPECT_EQ(views->size(), layout->tensors.size());
    }
  }
}

TEST(TensorCodec, RejectsWrongDtype) {
  auto layout = LayoutFor(Spec(2, {}, 2));
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<flatbuffers::Offset<fb::Tensor>> ts;
  for (const auto& slot : layout->tensors) {
    std::vector<uint8_t> data(slot.numel * 4, 0);
    ts.push_back(fb::CreateTensor(fbb, fbb.CreateString(slot.name), static_cast<fb::DType>(3),
                                  fbb.CreateVector(slot.shape), fbb.CreateVector(data)));
  }
  fb::FinishTensorListBuffer(fbb, fb::CreateTensorList(fbb, fbb.CreateVector(ts)));
  std::string buf(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize());
  auto views = DecodeParameters(buf, *layout);
  ASSERT_FALSE(views.ok());
  EXPECT_NE(views.status().message().find("expected float32"), std::string::npos);
}

}  // namespace
}  // namespace fleet
