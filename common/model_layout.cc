#include "common/model_layout.h"

#include <cmath>
#include <random>

namespace fleet {

// Largest accepted model: 64 M parameters (256 MiB as float32). Bigger jobs are refused early
// rather than failing half-way through a round.
constexpr size_t kMaxParameters = size_t{64} << 20;

StatusOr<ModelLayout> LayoutFor(const v1::ModelSpec& spec) {
  if (spec.type() != "mlp") {
    return InvalidArgument("model.type '" + spec.type() + "' is not supported (supported: mlp)");
  }
  if (spec.input_dim() == 0) return InvalidArgument("model.input_dim must be > 0");
  if (spec.output_dim() == 0) return InvalidArgument("model.output_dim must be > 0");
  std::vector<uint32_t> dims;
  dims.push_back(spec.input_dim());
  for (int i = 0; i < spec.hidden_size(); ++i) {
    if (spec.hidden(i) == 0) {
      return InvalidArgument("model.hidden[" + std::to_string(i) + "] must be > 0");
    }
    dims.push_back(spec.hidden(i));
  }
  dims.push_back(spec.output_dim());

  ModelLayout layout;
  for (size_t i = 0; i + 1 < dims.size(); ++i) {
    std::string prefix = "fc" + std::to_string(i);
    TensorSlot w{prefix + ".weight", {dims[i + 1], dims[i]}, size_t{dims[i + 1]} * dims[i], 0};
    TensorSlot b{prefix + ".bias", {dims[i + 1]}, dims[i + 1], 0};
    for (TensorSlot* t : {&w, &b}) {
      t->offset = layout.total;
      layout.total += t->numel;
      if (layout.total > kMaxParameters) {
        return InvalidArgument("model has more than " + std::to_string(kMaxParameters) +
                               " parameters");
      }
      layout.tensors.push_back(*t);
    }
  }
  return layout;
}

std::vector<float> InitialParameters(const ModelLayout& layout, uint64_t seed) {
  std::vector<float> params(layout.total);
  std::mt19937_64 rng(seed);  // model init only: reproducibility matters, secrecy does not
  for (size_t i = 0; i < layout.tensors.size(); ++i) {
    const TensorSlot& t = layout.tensors[i];
    // A bias draws its bound from the fan-in of the weight it follows.
    uint32_t fan_in = t.shape.size() == 2 ? t.shape[1] : layout.tensors[i - 1].shape[1];
    float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
    std::uniform_real_distribution<float> dist(-bound, bound);
    for (size_t j = 0; j < t.numel; ++j) params[t.offset + j] = dist(rng);
  }
  return params;
}

}  // namespace fleet
