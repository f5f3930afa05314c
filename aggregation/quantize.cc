#include "aggregation/quantize.h"

#include <algorithm>
#include <cmath>

#include "crypto/prg.h"

namespace fleet {
namespace {

double Levels(const QuantizationSpec& spec) { return std::ldexp(1.0, spec.value_bits) - 1; }

// x in [lo, hi] -> integer in [0, levels], stochastically rounded with uniform u in [0, 1).
uint64_t Round(double x, double lo, double hi, double levels, double u) {
  double v = (std::clamp(x, lo, hi) - lo) / (hi - lo) * levels;
  double f = std::floor(v);
  uint64_t q = static_cast<uint64_t>(f) + (u < v - f ? 1 : 0);
  return std::min<uint64_t>(q, static_cast<uint64_t>(levels));
}

}  // namespace

StatusOr<uint32_t> ModulusBitsFor(uint64_t n, uint32_t value_bits, uint32_t max_weight) {
  // n * max_weight * (2^q - 1) must stay below 2^b; computed in long double to avoid overflow.
  long double worst = static_cast<long double>(n) * max_weight * (std::ldexp(1.0L, value_bits) - 1);
  if (worst < std::ldexp(1.0L, 32)) return 32u;
  if (worst < std::ldexp(1.0L, 64)) return 64u;
  return FailedPrecondition("n * max_weight * 2^value_bits exceeds 2^64: lower value_bits or "
                            "max_weight");
}

Status ValidateQuantization(const QuantizationSpec& spec) {
  if (!(spec.clip > 0) || !std::isfinite(spec.clip)) return InvalidArgument("clip must be > 0");
  if (spec.value_bits < 2 || spec.value_bits > 24) {
    return InvalidArgument("value_bits must be in [2, 24]");
  }
  if (spec.max_weight < 1) return InvalidArgument("max_weight must be >= 1");
  if (spec.modulus_bits != 32 && spec.modulus_bits != 64) {
    return InvalidArgument("modulus_bits must be 32 or 64");
  }
  return OkStatus();
}

std::vector<uint64_t> QuantizeUpdate(const float* delta, size_t d, uint64_t num_examples,
                                     double train_loss, double val_accuracy,
                                     const QuantizationSpec& spec,
                                     const crypto::Secret32& rounding_seed) {
  const uint64_t w = std::min<uint64_t>(std::max<uint64_t>(num_examples, 1), spec.max_weight);
  const double levels = Levels(spec);
  std::vector<double> u(d + 2);
  crypto::UniformDoubles(rounding_seed, u.data(), u.size());
  std::vector<uint64_t> out(d + kSecAggExtraElements);
  const double c = spec.clip;
  for (size_t i = 0; i < d; ++i) out[i] = w * Round(delta[i], -c, c, levels, u[i]);
  out[d] = w;
  out[d + 1] = w * Round(std::isfinite(train_loss) ? train_loss : kSecAggLossClip, 0,
                         kSecAggLossClip, levels, u[d]);
  out[d + 2] = w * Round(std::isfinite(val_accuracy) ? val_accuracy : 0, 0, 1, levels, u[d + 1]);
  return out;
}

StatusOr<DequantizedSum> DequantizeSum(const std::vector<uint64_t>& sum,
                                       const QuantizationSpec& spec) {
  if (sum.size() < kSecAggExtraElements) return InvalidArgument("aggregate vector too short");
  const size_t d = sum.size() - kSecAggExtraElements;
  DequantizedSum out;
  out.total_weight = sum[d];
  if (out.total_weight == 0) return FailedPrecondition("aggregate has zero total weight");
  const double levels = Levels(spec);
  const double w = static_cast<double>(out.total_weight);
  const double limit = w * levels;
  for (size_t i = 0; i < sum.size(); ++i) {
    if (i != d && static_cast<double>(sum[i]) > limit + 0.5) {
      return Internal("aggregate element " + std::to_string(i) +
                      " exceeds its bound: masks did not cancel or the sum wrapped");
    }
  }
  const double c = spec.clip;
  out.mean_delta.resize(d);
  for (size_t i = 0; i < d; ++i) {
    out.mean_delta[i] = static_cast<float>(static_cast<double>(sum[i]) / limit * 2 * c - c);
  }
  out.train_loss = static_cast<double>(sum[d + 1]) / limit * kSecAggLossClip;
  out.val_accuracy = static_cast<double>(sum[d + 2]) / limit;
  return out;
}

}  // namespace fleet
