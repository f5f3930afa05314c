// Fixed encodings that SecAgg+ signatures, associated data and key derivations cover. Every field
// is length-prefixed, so distinct field lists never encode alike; every encoding starts with its
// own label, so a signature or key made for one purpose is useless for another.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "crypto/secret.h"

namespace fleet::secagg_wire {

// Signed by a client in AdvertiseKeys.
std::string KeysMessage(const std::string& job, uint32_t round, const std::string& device,
                        const std::string& cipher_pk, const std::string& mask_pk);
// Associated data of the share ciphertext from `from` to `to`.
std::string ShareAssociatedData(const std::string& job, uint32_t round, uint32_t from, uint32_t to);
// Signed by a client in ConsistencyCheck: the survivor set it was shown.
std::string SurvivorsMessage(const std::string& job, uint32_t round,
                             const std::vector<uint32_t>& survivors);
// KDF contexts for the share-encryption key and the pairwise mask seed of a (job, round).
std::string ShareKeyContext(const std::string& job, uint32_t round);
std::string MaskSeedContext(const std::string& job, uint32_t round);

// Plaintext of one encrypted share: the self-mask seed share then the mask-key share.
constexpr size_t kSharePlaintextBytes = 2 * 44;

}  // namespace fleet::secagg_wire
