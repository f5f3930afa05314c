// Shamir t-of-n secret sharing of 32-byte secrets over the prime field GF(2^61 - 1).
//
// A secret is cut into five chunks of at most 56 bits (7+7+7+7+4 bytes), each shared with its own
// random polynomial of degree t-1; a share is the evaluations of the five polynomials at the
// holder's x-coordinate. Field arithmetic on secret values is branch-free (no data-dependent
// branches or table lookups); x-coordinates are public. Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "crypto/secret.h"

namespace fleet::crypto {

constexpr uint64_t kShamirPrime = (uint64_t{1} << 61) - 1;
constexpr size_t kShamirChunks = 5;
constexpr size_t kShamirShareBytes = 4 + 8 * kShamirChunks;

struct ShamirShare {
  uint32_t x = 0;                            // holder's x-coordinate, never 0
  std::array<uint64_t, kShamirChunks> y{};   // field elements < kShamirPrime
  ~ShamirShare();
};

// One share per entry of `xs` (distinct, non-zero). Polynomial coefficients come from the
// CSPRNG, or from `coefficient_seed` when given (tests: reproducible known answers).
StatusOr<std::vector<ShamirShare>> ShamirSplit(const Secret32& secret,
                                               const std::vector<uint32_t>& xs, uint32_t threshold,
                                               const Secret32* coefficient_seed = nullptr);

// The secret from at least `threshold` shares with distinct x. Fails when there are too few, x
// repeats, or the shares are not of one secret (a reconstructed chunk out of range).
StatusOr<Secret32> ShamirReconstruct(const std::vector<ShamirShare>& shares, uint32_t threshold);

// Fixed-size wire encoding (x u32 LE, then y u64 LE each). Decode rejects wrong sizes and
// out-of-field values.
std::string EncodeShare(const ShamirShare& share);
StatusOr<ShamirShare> DecodeShare(const std::string& bytes);

namespace internal {
// Exposed for known-answer tests.
uint64_t FieldMul(uint64_t a, uint64_t b);
uint64_t FieldAdd(uint64_t a, uint64_t b);
uint64_t FieldSub(uint64_t a, uint64_t b);
uint64_t FieldInv(uint64_t a);
}  // namespace internal

}  // namespace fleet::crypto
