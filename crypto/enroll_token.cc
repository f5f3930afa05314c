#include "crypto/enroll_token.h"

#include <sodium.h>

#include <cstdint>

namespace fleet::crypto {
namespace {

void UpdateLengthPrefixed(crypto_generichash_state* st, std::string_view part) {
  uint8_t len[8];
  uint64_t n = part.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  crypto_generichash_update(st, len, sizeof len);
  crypto_generichash_update(st, reinterpret_cast<const unsigned char*>(part.data()), part.size());
}

std::string_view View(const Secret32& s) {
  return {reinterpret_cast<const char*>(s.data()), s.size()};
}

}  // namespace

bool IsTokenId(std::string_view id) {
  if (id.size() != kTokenIdHex) return false;
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

StatusOr<ParsedToken> ParseToken(std::string_view token) {
  const size_t prefix = sizeof kTokenPrefix - 1;
  ParsedToken t;
  if (token.size() != prefix + kTokenIdHex + 1 + 2 * Secret32::size() ||
      token.compare(0, prefix, kTokenPrefix) != 0 || token[prefix + kTokenIdHex] != '_' ||
      !IsTokenId(token.substr(prefix, kTokenIdHex)) ||
      !FromHex(std::string(token.substr(prefix + kTokenIdHex + 1)), t.secret.data(),
               t.secret.size())) {
    return InvalidArgument("malformed token (expected fleet1_<16 hex>_<64 hex>)");
  }
  t.id = std::string(token.substr(prefix, kTokenIdHex));
  return t;
}

std::string FormatToken(const std::string& id, const Secret32& secret) {
  return kTokenPrefix + id + "_" + ToHex(secret.data(), secret.size());
}

Secret32 KeyedHash(const uint8_t* key, size_t key_len, std::string_view context,
                   std::initializer_list<std::string_view> parts) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, key, key_len, 32);
  UpdateLengthPrefixed(&st, context);
  for (std::string_view p : parts) UpdateLengthPrefixed(&st, p);
  Secret32 out;
  crypto_generichash_final(&st, out.data(), out.size());
  sodium_memzero(&st, sizeof st);
  return out;
}

std::string EnrollProof(const Secret32& secret, const std::string& token_id,
                        const std::string& device_id, const std::string& csr_der) {
  const Secret32 k = KeyedHash(secret.data(), secret.size(), "fleetfl enroll key v1", {token_id});
  const Secret32 proof =
      KeyedHash(k.data(), k.size(), "fleetfl enroll proof v1", {device_id, csr_der});
  return std::string(View(proof));
}

std::string RenewalMessage(const std::string& device_id, const std::string& csr_der,
                           const std::string& current_serial) {
  // Length-prefixed like KeyedHash, so that no two triples encode alike.
  std::string m = "fleetfl renew v1";
  for (const std::string* p : {&device_id, &csr_der, &current_serial}) {
    uint64_t n = p->size();
    for (int i = 0; i < 8; ++i) m.push_back(static_cast<char>(n >> (8 * i)));
    m += *p;
  }
  return m;
}

}  // namespace fleet::crypto
