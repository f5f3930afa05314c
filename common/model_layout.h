// The parameter layout a ModelSpec implies: tensor names, shapes and offsets into one flat float
// vector. Coordinator (no torch) and client (torch) both derive it from the job's spec, so an
// update is checked against the shape the job declared, never against what a client claims.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "proto/fleet.pb.h"

namespace fleet {

struct TensorSlot {
  std::string name;              // e.g. "fc0.weight"
  std::vector<uint32_t> shape;   // row-major
  size_t numel = 0;
  size_t offset = 0;             // into the flat parameter vector
};

struct ModelLayout {
  std::vector<TensorSlot> tensors;
  size_t total = 0;              // number of float32 parameters
};

// Fails with INVALID_ARGUMENT naming the offending field when the spec is not buildable.
StatusOr<ModelLayout> LayoutFor(const v1::ModelSpec& spec);

// Deterministic initial weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as torch.nn.Linear does.
std::vector<float> InitialParameters(const ModelLayout& layout, uint64_t seed);

}  // namespace fleet
