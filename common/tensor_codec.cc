#include "common/tensor_codec.h"

#include <cmath>
#include <cstring>

#include "proto/tensor_generated.h"

namespace fleet {

static_assert(FLATBUFFERS_LITTLEENDIAN, "tensor payloads are little-endian; add byte swapping");

std::string EncodeParameters(const ModelLayout& layout, const float* params) {
  flatbuffers::FlatBufferBuilder fbb(layout.total * sizeof(float) + 256 * layout.tensors.size());
  std::vector<flatbuffers::Offset<fb::Tensor>> tensors;
  tensors.reserve(layout.tensors.size());
  for (const TensorSlot& t : layout.tensors) {
    auto name = fbb.CreateString(t.name);
    auto shape = fbb.CreateVector(t.shape);
    size_t bytes = t.numel * sizeof(float);
    fbb.ForceVectorAlignment(bytes, 1, 16);
    uint8_t* dst = nullptr;
    auto data = fbb.CreateUninitializedVector<uint8_t>(bytes, &dst);
    std::memcpy(dst, params + t.offset, bytes);
    tensors.push_back(fb::CreateTensor(fbb, name, fb::DType_Float32, shape, data));
  }
  auto list = fb::CreateTensorList(fbb, fbb.CreateVector(tensors));
  fb::FinishTensorListBuffer(fbb, list);
  return std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize());
}

StatusOr<std::vector<TensorView>> DecodeParameters(std::string_view buffer,
                                                   const ModelLayout& layout) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(buffer.data());
  if (buffer.size() < 8 || !fb::TensorListBufferHasIdentifier(bytes)) {
    return InvalidArgument("tensor payload is not a fleetfl TensorList (bad identifier or size " +
                           std::to_string(buffer.size()) + ")");
  }
  flatbuffers::Verifier verifier(bytes, buffer.size(), /*max_depth=*/16,
                                 /*max_tables=*/layout.tensors.size() + 16);
  if (!fb::VerifyTensorListBuffer(verifier)) {
    return InvalidArgument("tensor payload failed FlatBuffers verification (corrupt or truncated)");
  }
  const fb::TensorList* list = fb::GetTensorList(bytes);
  if (list->tensors()->size() != layout.tensors.size()) {
    return InvalidArgument("tensor payload has " + std::to_string(list->tensors()->size()) +
                           " tensors, the job's model has " +
                           std::to_string(layout.tensors.size()));
  }
  std::vector<TensorView> views;
  views.reserve(layout.tensors.size());
  for (size_t i = 0; i < layout.tensors.size(); ++i) {
    const TensorSlot& slot = layout.tensors[i];
    const fb::Tensor* t = list->tensors()->Get(static_cast<flatbuffers::uoffset_t>(i));
    if (t->name()->string_view() != slot.name) {
      return InvalidArgument("tensor " + std::to_string(i) + " is named '" + t->name()->str() +
                             "', expected '" + slot.name + "'");
    }
    if (t->dtype() != fb::DType_Float32) {
      return InvalidArgument("tensor '" + slot.name + "' has dtype " +
                             std::to_string(static_cast<int>(t->dtype())) + ", expected float32");
    }
    std::vector<uint32_t> shape(t->shape()->begin(), t->shape()->end());
    if (shape != slot.shape) {
      std::string got, want;
      for (auto d : shape) got += (got.empty() ? "" : "x") + std::to_string(d);
      for (auto d : slot.shape) want += (want.empty() ? "" : "x") + std::to_string(d);
      return InvalidArgument("tensor '" + slot.name + "' has shape [" + got + "], expected [" +
                             want + "]");
    }
    if (t->data()->size() != slot.numel * sizeof(float)) {
      return InvalidArgument("tensor '" + slot.name + "' has " +
                             std::to_string(t->data()->size()) + " data bytes, expected " +
                             std::to_string(slot.numel * sizeof(float)));
    }
    const uint8_t* raw = t->data()->data();
    if (reinterpret_cast<uintptr_t>(raw) % alignof(float) != 0) {
      return InvalidArgument("tensor '" + slot.name + "' data is misaligned");
    }
    const float* data = reinterpret_cast<const float*>(raw);
    for (size_t j = 0; j < slot.numel; ++j) {
      if (!std::isfinite(data[j])) {
        return InvalidArgument("tensor '" + slot.name + "' has a non-finite value at index " +
                               std::to_string(j));
      }
    }
    views.push_back({&slot, data});
  }
  return views;
}

std::vector<float> Flatten(const std::vector<TensorView>& views, const ModelLayout& layout) {
  std::vector<float> out(layout.total);
  for (const TensorView& v : views) {
    std::memcpy(out.data() + v.slot->offset, v.data, v.slot->numel * sizeof(float));
  }
  return out;
}

}  // namespace fleet
