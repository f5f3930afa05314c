// Fixed encodings that SecAgg+ signatures, associated data and key derivations cover. Every field
// is length-prefixed, so distinct field lists never encode alike; every encoding starts with its
// own label, so a signature or key made for one purpose is useless for another; and every one
// then names the round attempt (job, round, attempt nonce), so nothing made in one attempt of a
// round verifies, decrypts or derives the same key in another attempt of the same round.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "crypto/secret.h"

namespace fleet::secagg_wire {

constexpr size_t kAttemptNonceBytes = 32;

// One attempt of one round of a job; `nonce` is the SecAggTaskConfig.attempt_nonce the
// coordinator drew for it.
struct Attempt {
  std::string job;
  uint32_t round = 0;
  std::string nonce;
};

// One side of a pairwise relation: its index in the attempt and its device id.
struct Party {
  uint32_t index = 0;
  const std::string& id;
};

// Signed by a client in AdvertiseKeys.
std::string KeysMessage(const Attempt& attempt, const std::string& device,
                        const std::string& cipher_pk, const std::string& mask_pk);
// Associated data of the share ciphertext from `from` to `to`.
std::string ShareAssociatedData(const Attempt& attempt, Party from, Party to);
// Signed by a client in ConsistencyCheck: the survivor set it was shown.
std::string SurvivorsMessage(const Attempt& attempt, const std::vector<uint32_t>& survivors);
// KDF contexts of the share-encryption key and of the pairwise mask seed of two parties. Both
// name both parties' indices and device ids, in index order, so the two ends derive the same key
// and no other pair (or attempt) does.
std::string ShareKeyContext(const Attempt& attempt, Party a, Party b);
std::string MaskSeedContext(const Attempt& attempt, Party a, Party b);

// Plaintext of one encrypted share: the self-mask seed share then the mask-key share.
constexpr size_t kSharePlaintextBytes = 2 * 44;

}  // namespace fleet::secagg_wire
