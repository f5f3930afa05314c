// Fuzz target: the tensor codec (common/tensor_codec.h), the one door for model parameters from
// another party (updates at the coordinator, global models at devices), and the layout a model
// spec implies (common/model_layout.h), which it checks payloads against.
//
// Input: one byte picks the layout (four fixed models, or a model spec read from the next bytes),
// the rest is the TensorList payload. Checks beyond "no crash": every layout's slots add up
// (numel = product of the shape, offsets contiguous, within the parameter cap), a decoded view
// lies inside the buffer and is finite, and a decoded model re-encodes to a payload that decodes
// to the same values.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/model_layout.h"
#include "common/tensor_codec.h"
#include "tests/fuzz/fuzz_util.h"

namespace fleet {
namespace {

v1::ModelSpec Mlp(uint32_t in, std::vector<uint32_t> hidden, uint32_t out) {
  v1::ModelSpec m;
  m.set_type("mlp");
  m.set_input_dim(in);
  for (uint32_t h : hidden) m.add_hidden(h);
  m.set_output_dim(out);
  return m;
}

v1::ModelSpec Cnn(uint32_t in, uint32_t channels, uint32_t kernel, std::vector<uint32_t> hidden,
                  uint32_t out) {
  v1::ModelSpec m = Mlp(in, std::move(hidden), out);
  m.set_type("cnn1d");
  m.set_channels(channels);
  m.set_kernel_size(kernel);
  return m;
}

// A model spec from the fuzzer's bytes.
v1::ModelSpec SpecFrom(fuzz::Input* in) {
  v1::ModelSpec m;
  m.set_type(in->Byte() % 2 == 0 ? "mlp" : "cnn1d");
  m.set_input_dim(in->U32());
  m.set_output_dim(in->U32());
  m.set_channels(in->U32());
  m.set_kernel_size(in->U32());
  const int hidden = in->Byte() % 5;
  for (int i = 0; i < hidden; ++i) m.add_hidden(in->U32());
  return m;
}

// The invariants every layout must keep, whatever spec it came from.
void CheckLayout(const ModelLayout& layout) {
  size_t offset = 0;
  for (const TensorSlot& t : layout.tensors) {
    __extension__ unsigned __int128 product = 1;
    for (uint32_t d : t.shape) product *= d;
    FUZZ_CHECK(product == t.numel, "tensor %s: numel %zu is not the product of its shape",
               t.name.c_str(), t.numel);
    FUZZ_CHECK(t.offset == offset, "tensor %s: offset %zu, expected %zu", t.name.c_str(), t.offset,
               offset);
    offset += t.numel;
  }
  FUZZ_CHECK(offset == layout.total, "layout total %zu, tensors add up to %zu", layout.total,
             offset);
  FUZZ_CHECK(layout.total <= (size_t{64} << 20), "layout of %zu parameters passed the cap",
             layout.total);
}

}  // namespace
}  // namespace fleet

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fleet;
  static const std::vector<ModelLayout> fixed = [] {
    std::vector<ModelLayout> out;
    for (const v1::ModelSpec& m :
         {Mlp(3, {4}, 2), Mlp(2, {}, 2), Mlp(1, {2, 2}, 1), Cnn(8, 2, 3, {2}, 2)}) {
      out.push_back(std::move(LayoutFor(m)).value());
    }
    return out;
  }();
  fuzz::Input in(data, size);
  const uint8_t pick = in.Byte();
  ModelLayout derived;
  const ModelLayout* layout = nullptr;
  if (pick < 0xf0) {
    layout = &fixed[pick % fixed.size()];
  } else {
    StatusOr<ModelLayout> l = LayoutFor(SpecFrom(&in));
    if (!l.ok()) return 0;
    derived = std::move(l).value();
    CheckLayout(derived);
    if (derived.total > (1u << 16)) return 0;  // decoding a huge model teaches nothing new
    layout = &derived;
  }
  // A std::string's buffer is aligned like operator new's, as the codec requires.
  const std::string buffer(in.Rest());
  StatusOr<std::vector<TensorView>> views = DecodeParameters(buffer, *layout);
  if (!views.ok()) {
    FUZZ_CHECK(!views.status().message().empty(), "a refusal without a reason");
    return 0;
  }
  FUZZ_CHECK(views->size() == layout->tensors.size(), "%zu views for %zu tensors", views->size(),
             layout->tensors.size());
  const char* begin = buffer.data();
  const char* end = begin + buffer.size();
  for (size_t i = 0; i < views->size(); ++i) {
    const TensorView& v = (*views)[i];
    FUZZ_CHECK(v.slot == &layout->tensors[i], "view %zu is not for slot %zu", i, i);
    const char* p = reinterpret_cast<const char*>(v.data);
    FUZZ_CHECK(p >= begin && p + v.slot->numel * sizeof(float) <= end,
               "view of tensor %s lies outside the payload", v.slot->name.c_str());
    for (size_t j = 0; j < v.slot->numel; ++j) {
      FUZZ_CHECK(std::isfinite(v.data[j]), "non-finite value decoded");
    }
  }
  const std::vector<float> flat = Flatten(*views, *layout);
  const std::string again = EncodeParameters(*layout, flat.data());
  StatusOr<std::vector<TensorView>> round_trip = DecodeParameters(again, *layout);
  FUZZ_CHECK(round_trip.ok(), "re-encoded model does not decode: %s",
             round_trip.status().message().c_str());
  const std::vector<float> flat_again = Flatten(*round_trip, *layout);
  FUZZ_CHECK(flat.size() == flat_again.size() &&
                 std::memcmp(flat.data(), flat_again.data(), flat.size() * sizeof(float)) == 0,
             "re-encoded model decodes to other values");
  return 0;
}
