// The one tensor codec: model parameters <-> FlatBuffers TensorList (proto/tensor.fbs).
// Decoding is zero-copy (views point into the buffer) and validates everything a peer controls:
// the FlatBuffers verifier, file identifier, tensor names/shapes/dtypes against the job's layout,
// byte sizes, and that every value is finite.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/model_layout.h"
#include "common/status.h"

namespace fleet {

struct TensorView {
  const TensorSlot* slot;  // the layout entry this tensor matched
  const float* data;       // slot->numel floats inside the decoded buffer
};

// Serializes `params` (layout.total floats, in layout order).
std::string EncodeParameters(const ModelLayout& layout, const float* params);

// `buffer` must outlive the returned views and be at least 4-byte aligned in memory.
StatusOr<std::vector<TensorView>> DecodeParameters(std::string_view buffer,
                                                   const ModelLayout& layout);

// Copies decoded views into one flat vector in layout order.
std::vector<float> Flatten(const std::vector<TensorView>& views, const ModelLayout& layout);

}  // namespace fleet
