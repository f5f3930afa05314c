// Mask expansion for secure aggregation: a 32-byte seed is stretched with ChaCha20 (IETF,
// libsodium) into words over Z_{2^32} or Z_{2^64}, which are added to or subtracted from a
// vector in place. Wrap-around arithmetic of the unsigned word type is the ring operation.
// Thread-safe; each call uses its own stack buffer.
#pragma once

#include <cstddef>
#include <cstdint>

#include "crypto/secret.h"

namespace fleet::crypto {

enum class MaskSign { kAdd, kSubtract };

// out[i] (+|-)= PRG(seed)[i] for i < n. Word is uint32_t or uint64_t. Word i is bytes
// [i*sizeof(Word), (i+1)*sizeof(Word)) of the keystream, little-endian.
template <typename Word>
void ApplyMask(const Secret32& seed, MaskSign sign, Word* out, size_t n);

// Raw keystream starting at 64-byte block `first_block`: the speed floor the benchmark compares
// ApplyMask against, and the coefficient source of seeded Shamir splits.
void Keystream(const Secret32& seed, uint8_t* out, size_t bytes, uint32_t first_block = 0);

// `n` uniform doubles in [0, 1) from the keystream of `seed` starting at 64-byte block
// `first_block` (53 random bits each, one per 8 keystream bytes): the randomness of stochastic
// rounding, reproducible when the seed is injected.
void UniformDoubles(const Secret32& seed, double* out, size_t n, uint32_t first_block = 0);

}  // namespace fleet::crypto
