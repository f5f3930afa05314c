#include "common/model_layout.h"

#include <cmath>
#include <random>

namespace fleet {

// Largest accepted model: 64 M parameters (256 MiB as float32). Bigger jobs are refused early
// rather than failing half-way through a round.
constexpr size_t kMaxParameters = size_t{64} << 20;

namespace {

Status Append(ModelLayout* layout, TensorSlot t) {
  t.offset = layout->total;
  layout->total += t.numel;
  if (layout->total > kMaxParameters) {
    return InvalidArgument("model has more than " + std::to_string(kMaxParameters) +
                           " parameters");
  }
  layout->tensors.push_back(std::move(t));
  return OkStatus();
}

// conv{i}.weight [h_i, c_in, k], conv{i}.bias [h_i], ..., fc.weight [out, h_last], fc.bias.
StatusOr<ModelLayout> Cnn1dLayout(const v1::ModelSpec& spec) {
  const uint32_t c = spec.channels(), k = spec.kernel_size();
  if (c == 0 || spec.input_dim() % c != 0) {
    return InvalidArgument("model.channels must be > 0 and divide input_dim (" +
                           std::to_string(spec.input_dim()) + ")");
  }
  if (k == 0 || k % 2 == 0 || k > spec.input_dim() / c * 2 + 1) {
    return InvalidArgument("model.kernel_size must be odd and at most twice the window length");
  }
  if (spec.hidden_size() == 0) return InvalidArgument("model.hidden must list the conv widths");
  ModelLayout layout;
  uint32_t in = c;
  for (int i = 0; i < spec.hidden_size(); ++i) {
    const uint32_t h = spec.hidden(i);  // > 0: checked by LayoutFor
    const std::string prefix = "conv" + std::to_string(i);
    RETURN_IF_ERROR(Append(&layout, {prefix + ".weight", {h, in, k}, size_t{h} * in * k, 0}));
    RETURN_IF_ERROR(Append(&layout, {prefix + ".bias", {h}, h, 0}));
    in = h;
  }
  const uint32_t out = spec.output_dim();
  RETURN_IF_ERROR(Append(&layout, {"fc.weight", {out, in}, size_t{out} * in, 0}));
  RETURN_IF_ERROR(Append(&layout, {"fc.bias", {out}, out, 0}));
  return layout;
}

}  // namespace

StatusOr<ModelLayout> LayoutFor(const v1::ModelSpec& spec) {
  if (spec.type() != "mlp" && spec.type() != "cnn1d") {
    return InvalidArgument("model.type '" + spec.type() +
                           "' is not supported (supported: mlp, cnn1d)");
  }
  if (spec.input_dim() == 0) return InvalidArgument("model.input_dim must be > 0");
  if (spec.output_dim() == 0) return InvalidArgument("model.output_dim must be > 0");
  for (int i = 0; i < spec.hidden_size(); ++i) {
    if (spec.hidden(i) == 0) {
      return InvalidArgument("model.hidden[" + std::to_string(i) + "] must be > 0");
    }
  }
  if (spec.type() == "cnn1d") return Cnn1dLayout(spec);

  std::vector<uint32_t> dims{spec.input_dim()};
  dims.insert(dims.end(), spec.hidden().begin(), spec.hidden().end());
  dims.push_back(spec.output_dim());
  ModelLayout layout;
  for (size_t i = 0; i + 1 < dims.size(); ++i) {
    const std::string prefix = "fc" + std::to_string(i);
    RETURN_IF_ERROR(Append(&layout, {prefix + ".weight", {dims[i + 1], dims[i]},
                                     size_t{dims[i + 1]} * dims[i], 0}));
    RETURN_IF_ERROR(Append(&layout, {prefix + ".bias", {dims[i + 1]}, dims[i + 1], 0}));
  }
  return layout;
}

std::vector<float> InitialParameters(const ModelLayout& layout, uint64_t seed) {
  std::vector<float> params(layout.total);
  std::mt19937_64 rng(seed);  // model init only: reproducibility matters, secrecy does not
  for (size_t i = 0; i < layout.tensors.size(); ++i) {
    const TensorSlot& t = layout.tensors[i];
    // A bias draws its bound from the fan-in of the weight it follows (in x kernel for convs).
    const TensorSlot& w = t.shape.size() >= 2 ? t : layout.tensors[i - 1];
    uint32_t fan_in = 1;
    for (size_t d = 1; d < w.shape.size(); ++d) fan_in *= w.shape[d];
    float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
    std::uniform_real_distribution<float> dist(-bound, bound);
    for (size_t j = 0; j < t.numel; ++j) params[t.offset + j] = dist(rng);
  }
  return params;
}

}  // namespace fleet
