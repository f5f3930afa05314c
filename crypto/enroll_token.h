// Bootstrap tokens and the proofs made with them (protocol v3). A token is
// "fleet1_<id>_<secret>": 16 hex digits of public id and 64 hex digits of secret. The secret never
// travels: to enroll, a device sends the id and
//
//   K     = BLAKE2b-256 keyed with the secret over ("fleetfl enroll key v1", id)
//   proof = BLAKE2b-256 keyed with K over ("fleetfl enroll proof v1", device id, CSR DER)
//
// (each part length-prefixed, see KeyedHash), which the registrar that made the token recomputes
// and compares in constant time. A proof binds one device id and one CSR: whoever relays or
// replays it gets at most a certificate for that CSR's key, useless without its private key.
// Renewal proves possession of the current certificate's key with an ECDSA signature over
// RenewalMessage. Thread-safe: no shared state.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

#include "common/status.h"
#include "crypto/secret.h"

namespace fleet::crypto {

inline constexpr char kTokenPrefix[] = "fleet1_";
inline constexpr size_t kTokenIdHex = 16;
inline constexpr size_t kTokenProofBytes = 32;

struct ParsedToken {
  std::string id;
  Secret32 secret;
};
// InvalidArgument (naming the expected form, never echoing the input) unless `token` is
// fleet1_<16 lowercase hex>_<64 hex>.
StatusOr<ParsedToken> ParseToken(std::string_view token);
std::string FormatToken(const std::string& id, const Secret32& secret);
// True for 16 lowercase hex digits.
bool IsTokenId(std::string_view id);

// The proof a holder of `secret` (token `token_id`) makes for enrolling `device_id` with the
// CSR whose DER is `csr_der`.
std::string EnrollProof(const Secret32& secret, const std::string& token_id,
                        const std::string& device_id, const std::string& csr_der);

// What a device signs with its current certificate's key to renew it.
std::string RenewalMessage(const std::string& device_id, const std::string& csr_der,
                           const std::string& current_serial);

// BLAKE2b-256 keyed with `key` over `context` and `parts`, each length-prefixed (u64 LE).
Secret32 KeyedHash(const uint8_t* key, size_t key_len, std::string_view context,
                   std::initializer_list<std::string_view> parts);

}  // namespace fleet::crypto
