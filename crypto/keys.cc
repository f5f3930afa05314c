#include "crypto/keys.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>

namespace fleet::crypto {
namespace {

void AbsorbField(crypto_generichash_state* st, std::string_view field) {
  uint8_t len[8];
  uint64_t n = field.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  crypto_generichash_update(st, len, sizeof len);
  crypto_generichash_update(st, reinterpret_cast<const uint8_t*>(field.data()), field.size());
}

std::string_view View(const uint8_t* p, size_t n) {
  return std::string_view(reinterpret_cast<const char*>(p), n);
}

}  // namespace

Secret32 DeriveKey(std::string_view context, std::initializer_list<std::string_view> parts) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, 32);
  AbsorbField(&st, context);
  for (std::string_view p : parts) AbsorbField(&st, p);
  Secret32 out;
  crypto_generichash_final(&st, out.data(), 32);
  sodium_memzero(&st, sizeof st);
  return out;
}

DhKeyPair DhKeyPair::Generate() {
  DhKeyPair kp;
  randombytes_buf(kp.secret_key.data(), 32);
  crypto_scalarmult_base(kp.public_key.data(), kp.secret_key.data());
  return kp;
}

StatusOr<Secret32> AgreeKey(const Secret32& my_secret, const Bytes32& my_public,
                            const Bytes32& peer_public, std::string_view context) {
  Secret32 shared;
  if (crypto_scalarmult(shared.data(), my_secret.data(), peer_public.data()) != 0) {
    return InvalidArgument("X25519 peer public key is a low-order point");
  }
  const Bytes32& lo = std::min(my_public, peer_public);
  const Bytes32& hi = std::max(my_public, peer_public);
  return DeriveKey(context, {View(shared.data(), 32), View(lo.data(), 32), View(hi.data(), 32)});
}

SigningKey SigningKey::Generate() {
  SigningKey k;
  crypto_sign_keypair(k.public_key_.data(), k.secret_key_.data());
  return k;
}

SigningKey SigningKey::FromSeed(const Secret32& seed) {
  SigningKey k;
  crypto_sign_seed_keypair(k.public_key_.data(), k.secret_key_.data(), seed.data());
  return k;
}

std::string SigningKey::Sign(std::string_view message) const {
  std::string sig(crypto_sign_BYTES, '\0');
  crypto_sign_detached(reinterpret_cast<uint8_t*>(sig.data()), nullptr,
                       reinterpret_cast<const uint8_t*>(message.data()), message.size(),
                       secret_key_.data());
  return sig;
}

bool VerifySignature(const Bytes32& public_key, std::string_view message,
                     std::string_view signature) {
  if (signature.size() != crypto_sign_BYTES) return false;
  return crypto_sign_verify_detached(reinterpret_cast<const uint8_t*>(signature.data()),
                                     reinterpret_cast<const uint8_t*>(message.data()),
                                     message.size(), public_key.data()) == 0;
}

std::string Seal(const Secret32& key, std::string_view plaintext, std::string_view associated) {
  constexpr size_t kNonce = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
  std::string out(kNonce + plaintext.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES, '\0');
  auto* p = reinterpret_cast<uint8_t*>(out.data());
  randombytes_buf(p, kNonce);
  unsigned long long clen = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
      p + kNonce, &clen, reinterpret_cast<const uint8_t*>(plaintext.data()), plaintext.size(),
      reinterpret_cast<const uint8_t*>(associated.data()), associated.size(), nullptr, p,
      key.data());
  out.resize(kNonce + clen);
  return out;
}

StatusOr<std::string> Open(const Secret32& key, std::string_view sealed,
                           std::string_view associated) {
  constexpr size_t kNonce = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
  constexpr size_t kTag = crypto_aead_xchacha20poly1305_ietf_ABYTES;
  if (sealed.size() < kNonce + kTag) return InvalidArgument("ciphertext too short");
  const auto* p = reinterpret_cast<const uint8_t*>(sealed.data());
  std::string plain(sealed.size() - kNonce - kTag, '\0');
  unsigned long long plen = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          reinterpret_cast<uint8_t*>(plain.data()), &plen, nullptr, p + kNonce,
          sealed.size() - kNonce, reinterpret_cast<const uint8_t*>(associated.data()),
          associated.size(), p, key.data()) != 0) {
    sodium_memzero(plain.data(), plain.size());
    return InvalidArgument("ciphertext failed authentication (tampered, wrong key or context)");
  }
  plain.resize(plen);
  return plain;
}

}  // namespace fleet::crypto
