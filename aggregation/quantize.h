// Fixed-point encoding of client updates for secure aggregation.
//
// A client clips each coordinate of its update (delta from the global model) to [-clip, clip],
// maps it to [0, 2^q - 1] and rounds stochastically (unbiased), then multiplies by its weight
// (example count, capped at max_weight). Three extra elements follow the D coordinates: the
// weight itself, and weight-scaled quantized training loss and validation accuracy, so the server
// learns only weighted sums of those too. The sum of n such vectors is exact in Z_{2^b} as long
// as n * max_weight * (2^q - 1) < 2^b; ModulusBitsFor picks b = 32 when that holds, else 64.
//
// Dequantized, the weighted mean differs from the float weighted mean of the clipped updates by
// at most one quantization step, 2 * clip / (2^q - 1), per coordinate.
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "crypto/secret.h"

namespace fleet {

struct QuantizationSpec {
  float clip = 1.0f;
  uint32_t value_bits = 16;
  uint32_t max_weight = 1000;
  uint32_t modulus_bits = 32;    // 32 or 64
};

constexpr size_t kSecAggExtraElements = 3;       // weight, weighted loss, weighted accuracy
constexpr double kSecAggLossClip = 100.0;        // losses are reported in [0, 100]

// b for n clients: 32 if the sum cannot wrap mod 2^32, else 64; an error if even 64 bits wrap.
StatusOr<uint32_t> ModulusBitsFor(uint64_t n, uint32_t value_bits, uint32_t max_weight);

Status ValidateQuantization(const QuantizationSpec& spec);

// Ring elements (values < 2^b) for one client: D coordinates then the three extras.
// `rounding_seed` drives the stochastic rounding (fresh CSPRNG seed in production). A NaN or
// infinite coordinate is an InvalidArgument naming it (nothing is quantized: a non-finite value
// has no fixed-point image, and converting NaN to an integer is undefined behaviour); a
// non-finite loss or accuracy is reported as the worst value (loss kSecAggLossClip, accuracy 0).
StatusOr<std::vector<uint64_t>> QuantizeUpdate(const float* delta, size_t d, uint64_t num_examples,
                                               double train_loss, double val_accuracy,
                                               const QuantizationSpec& spec,
                                               const crypto::Secret32& rounding_seed);

// The same elements packed as little-endian words of spec.modulus_bits / 8 bytes each: the
// buffer SecAggClient::MaskInput masks in place. One allocation of the final upload's size and
// nothing else D-sized (QuantizeUpdate's uint64 vector is twice that for b = 32). The same
// refusal of non-finite coordinates (the partial buffer is wiped).
StatusOr<std::string> QuantizeToWords(const float* delta, size_t d, uint64_t num_examples,
                                      double train_loss, double val_accuracy,
                                      const QuantizationSpec& spec,
                                      const crypto::Secret32& rounding_seed);

// Packs ring elements (each < 2^modulus_bits) as QuantizeToWords lays them out.
StatusOr<std::string> PackWords(const std::vector<uint64_t>& values, uint32_t modulus_bits);

struct DequantizedSum {
  std::vector<float> mean_delta;   // weighted mean of the clients' (clipped) deltas
  uint64_t total_weight = 0;
  double train_loss = 0;           // weighted means
  double val_accuracy = 0;
};

// Inverse of QuantizeUpdate applied to the sum of several clients' vectors (mod 2^b). Refuses an
// invalid spec, a zero total weight, and any element above total_weight * (2^q - 1) (compared
// in integers), so every result is finite and within [-clip, clip].
StatusOr<DequantizedSum> DequantizeSum(const std::vector<uint64_t>& sum,
                                       const QuantizationSpec& spec);

}  // namespace fleet
