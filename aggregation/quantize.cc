#include "aggregation/quantize.h"

#include <sodium.h>

#include <algorithm>
#include <cmath>
#include <cstring>

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

// Stochastic-rounding uniforms, streamed: u(i) is the i-th double UniformDoubles(seed, ..) would
// return, produced 512 at a time (one 4 KiB keystream chunk) instead of a D-sized array.
class UniformStream {
 public:
  explicit UniformStream(const crypto::Secret32& seed) : seed_(seed) {}
  ~UniformStream() { sodium_memzero(buf_, sizeof buf_); }
  double operator()(size_t i) {
    const size_t chunk = i / kPerChunk;
    if (chunk != chunk_) {
      crypto::UniformDoubles(seed_, buf_, kPerChunk, static_cast<uint32_t>(chunk * kBlocksPerChunk));
      chunk_ = chunk;
    }
    return buf_[i % kPerChunk];
  }

 private:
  static constexpr size_t kPerChunk = 512;  // 4 KiB of keystream = 64 ChaCha20 blocks
  static constexpr size_t kBlocksPerChunk = kPerChunk * sizeof(uint64_t) / 64;
  const crypto::Secret32& seed_;
  double buf_[kPerChunk];
  size_t chunk_ = SIZE_MAX;
};

// Calls put(i, element) for the d + kSecAggExtraElements ring elements of one client, in order.
// Stops at the first non-finite coordinate, which it names.
template <typename Put>
Status Quantize(const float* delta, size_t d, uint64_t num_examples, double train_loss,
                double val_accuracy, const QuantizationSpec& spec,
                const crypto::Secret32& rounding_seed, Put&& put) {
  const uint64_t w = std::min<uint64_t>(std::max<uint64_t>(num_examples, 1), spec.max_weight);
  const double levels = Levels(spec);
  const double c = spec.clip;
  UniformStream u(rounding_seed);
  for (size_t i = 0; i < d; ++i) {
    // Before Round: std::clamp passes NaN through, and static_cast<uint64_t>(NaN) is undefined.
    if (!std::isfinite(delta[i])) {
      return InvalidArgument("update coordinate " + std::to_string(i) + " of " + std::to_string(d) +
                             " is " + (std::isnan(delta[i]) ? "NaN" : "infinite") +
                             ": refusing to quantize a non-finite update");
    }
    put(i, w * Round(delta[i], -c, c, levels, u(i)));
  }
  put(d, w);
  put(d + 1, w * Round(std::isfinite(train_loss) ? train_loss : kSecAggLossClip, 0,
                       kSecAggLossClip, levels, u(d)));
  put(d + 2, w * Round(std::isfinite(val_accuracy) ? val_accuracy : 0, 0, 1, levels, u(d + 1)));
  return OkStatus();
}

// Little-endian words of `bits` / 8 bytes; callers checked bits is 32 or 64.
void PutWord(std::string* out, size_t i, uint64_t v, uint32_t bits) {
  if (bits == 32) {
    const auto w = static_cast<uint32_t>(v);
    std::memcpy(out->data() + i * 4, &w, 4);
  } else {
    std::memcpy(out->data() + i * 8, &v, 8);
  }
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

StatusOr<std::vector<uint64_t>> QuantizeUpdate(const float* delta, size_t d, uint64_t num_examples,
                                               double train_loss, double val_accuracy,
                                               const QuantizationSpec& spec,
                                               const crypto::Secret32& rounding_seed) {
  std::vector<uint64_t> out(d + kSecAggExtraElements);
  Status s = Quantize(delta, d, num_examples, train_loss, val_accuracy, spec, rounding_seed,
                      [&](size_t i, uint64_t v) { out[i] = v; });
  if (!s.ok()) {
    sodium_memzero(out.data(), out.size() * sizeof(uint64_t));
    return s;
  }
  return out;
}

StatusOr<std::string> QuantizeToWords(const float* delta, size_t d, uint64_t num_examples,
                                      double train_loss, double val_accuracy,
                                      const QuantizationSpec& spec,
                                      const crypto::Secret32& rounding_seed) {
  const uint32_t bits = spec.modulus_bits == 32 ? 32 : 64;
  std::string out((d + kSecAggExtraElements) * (bits / 8), '\0');
  Status s = Quantize(delta, d, num_examples, train_loss, val_accuracy, spec, rounding_seed,
                      [&](size_t i, uint64_t v) { PutWord(&out, i, v, bits); });
  if (!s.ok()) {
    sodium_memzero(out.data(), out.size());
    return s;
  }
  return out;
}

StatusOr<std::string> PackWords(const std::vector<uint64_t>& values, uint32_t modulus_bits) {
  if (modulus_bits != 32 && modulus_bits != 64) {
    return InvalidArgument("modulus_bits must be 32 or 64");
  }
  std::string out(values.size() * (modulus_bits / 8), '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    if (modulus_bits == 32 && values[i] >> 32) {
      sodium_memzero(out.data(), out.size());
      return InvalidArgument("input element exceeds 2^32");
    }
    PutWord(&out, i, values[i], modulus_bits);
  }
  return out;
}

StatusOr<DequantizedSum> DequantizeSum(const std::vector<uint64_t>& sum,
                                       const QuantizationSpec& spec) {
  RETURN_IF_ERROR(ValidateQuantization(spec));
  if (sum.size() < kSecAggExtraElements) return InvalidArgument("aggregate vector too short");
  const size_t d = sum.size() - kSecAggExtraElements;
  DequantizedSum out;
  out.total_weight = sum[d];
  if (out.total_weight == 0) return FailedPrecondition("aggregate has zero total weight");
  // The bound in integers: a double compare loses the low bits of 64-bit sums.
  const uint64_t levels_int = (uint64_t{1} << spec.value_bits) - 1;
  if (out.total_weight > UINT64_MAX / levels_int) {
    return Internal("aggregate total weight " + std::to_string(out.total_weight) +
                    " is impossible for this quantization: the sum wrapped or is corrupt");
  }
  const uint64_t bound = out.total_weight * levels_int;
  for (size_t i = 0; i < sum.size(); ++i) {
    if (i != d && sum[i] > bound) {
      return Internal("aggregate element " + std::to_string(i) +
                      " exceeds its bound: masks did not cancel or the sum wrapped");
    }
  }
  const double limit = static_cast<double>(bound);
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
