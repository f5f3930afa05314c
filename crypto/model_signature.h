// Signed tasks: the coordinator signs the exact bytes of every task it sends (a serialized
// v1::Task: job, round, model spec, training settings, SecAgg configuration, parameters) with its
// Ed25519 model-signing key, and a device verifies those bytes, with the public key it received
// at enrollment, before it parses or acts on them. The signed message is a fixed domain tag and
// the BLAKE2b-256 digest of the bytes, so the digest of a model-sized task is computed once per
// round, and no canonical encoding is needed: any implementation that can hash the bytes it
// received can verify them. Wire format: proto/fleet.proto, message SignedTask.
#pragma once

#include <string>
#include <string_view>

#include "crypto/keys.h"

namespace fleet::crypto {

// "fleetfl signed task v1" || 0x00 || BLAKE2b-256(task_bytes): the message that is signed
// (exposed for tests and for implementations in other languages to check against).
std::string TaskSignatureMessage(std::string_view task_bytes);

// 64-byte Ed25519 signature over TaskSignatureMessage(task_bytes).
std::string SignTask(const SigningKey& key, std::string_view task_bytes);

// True only for a signature made by `public_key`'s owner over exactly `task_bytes`.
bool VerifyTask(const Bytes32& public_key, std::string_view task_bytes, std::string_view signature);

}  // namespace fleet::crypto
