// CSPRNG and constant-time helpers over libsodium. No gRPC, no torch, no other project module.
#pragma once

#include <cstddef>
#include <string>

namespace fleet::crypto {

// Initializes libsodium; safe to call more than once. Returns false if the library cannot start.
bool Init();

// `bytes` random bytes from the OS CSPRNG, hex-encoded (2 * bytes characters).
std::string RandomHex(size_t bytes);

// Constant-time equality for secrets (tokens, MACs). Different lengths compare unequal.
bool ConstantTimeEqual(const std::string& a, const std::string& b);

}  // namespace fleet::crypto
