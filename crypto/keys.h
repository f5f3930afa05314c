// Key agreement (X25519), key derivation (BLAKE2b), signatures (Ed25519) and authenticated
// encryption (XChaCha20-Poly1305), all from libsodium. Nothing here invents a primitive: these
// are thin wrappers that fix encodings, domain separation and error handling.
// Thread-safe: no shared state (libsodium must be initialized once, crypto::Init()).
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

#include "common/status.h"
#include "crypto/secret.h"

namespace fleet::crypto {

// ------------------------------------------------------------------ KDF

// BLAKE2b-256 over a domain-separation `context` and `parts`, each length-prefixed (u64 LE) so
// that no two different (context, parts) lists encode to the same input.
Secret32 DeriveKey(std::string_view context, std::initializer_list<std::string_view> parts);

// ------------------------------------------------------------------ X25519

struct DhKeyPair {
  Bytes32 public_key;
  Secret32 secret_key;
  static DhKeyPair Generate();
};

// Both parties derive the same 32-byte key: BLAKE2b(context, X25519(sk, peer), pk_lo, pk_hi).
// Fails on a low-order peer key (all-zero shared secret).
StatusOr<Secret32> AgreeKey(const Secret32& my_secret, const Bytes32& my_public,
                            const Bytes32& peer_public, std::string_view context);

// ------------------------------------------------------------------ Ed25519

class SigningKey {
 public:
  static SigningKey Generate();
  static SigningKey FromSeed(const Secret32& seed);

  const Bytes32& public_key() const { return public_key_; }
  // 64-byte detached signature.
  std::string Sign(std::string_view message) const;

 private:
  Bytes32 public_key_{};
  Secret<64> secret_key_;
};

bool VerifySignature(const Bytes32& public_key, std::string_view message,
                     std::string_view signature);

// ------------------------------------------------------------------ AEAD

// XChaCha20-Poly1305 with a random 24-byte nonce: returns nonce || ciphertext || tag.
std::string Seal(const Secret32& key, std::string_view plaintext, std::string_view associated);
// Opens a Seal() output; fails (without detail, by design) on any tampering or a wrong key/AD.
StatusOr<std::string> Open(const Secret32& key, std::string_view sealed,
                           std::string_view associated);

}  // namespace fleet::crypto
