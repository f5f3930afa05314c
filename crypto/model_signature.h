// Signed models: the coordinator signs every global model it sends with its Ed25519
// model-signing key over (job id, round, BLAKE2b-256 of the parameter bytes), domain-separated.
// A device verifies before training or inference with the public key it received at enrollment.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "crypto/keys.h"

namespace fleet::crypto {

// The exact bytes that are signed (exposed for tests).
std::string ModelSignatureMessage(std::string_view job_id, uint32_t round,
                                  std::string_view parameters);

std::string SignModel(const SigningKey& key, std::string_view job_id, uint32_t round,
                      std::string_view parameters);

bool VerifyModel(const Bytes32& public_key, std::string_view job_id, uint32_t round,
                 std::string_view parameters, std::string_view signature);

}  // namespace fleet::crypto
