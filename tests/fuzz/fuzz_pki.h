// The fixed test fleet of the fuzz targets: a CA whose key is written here (a test key, never a
// secret), so certificates in the seed corpora (made by make_corpus.cc) chain to the CA every
// fuzz process builds from it, and devices whose SecAgg signing keys come from fixed seeds, so
// relayed messages in the corpora carry signatures that verify.
#pragma once

#include <cstdint>
#include <string>

#include "crypto/keys.h"
#include "crypto/pki.h"
#include "crypto/random.h"
#include "tests/fuzz/fuzz_util.h"

namespace fleet::fuzz {

constexpr int64_t kFuzzNow = 1'800'000'000;  // the clock of every fuzz target (2027)

inline const std::string& FuzzCaKey() {
  static const std::string key =
      "-----BEGIN PRIVATE KEY-----\n"
      "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgYb4iUCxNaSv84py2\n"
      "5Je957I4bdfMqpSOOMpTLQvFEoChRANCAATBt+Sln0k4H3Vx25qGzAbDxy0LvXaS\n"
      "Vaj6SRP9yzGmaAN2CVuX0HtGBWcYRF3WumYBtfJunPPDK5aoPo4yH5l9\n"
      "-----END PRIVATE KEY-----\n";
  return key;
}

// The CA certificate (built once per process; its serial differs, its name and key do not).
inline const std::string& FuzzCaCert() {
  static const std::string cert = [] {
    FUZZ_CHECK(crypto::Init(), "libsodium init");
    StatusOr<std::string> c = crypto::MakeCaCertificate(FuzzCaKey(), "fleetfl fuzz CA",
                                                        kFuzzNow - 86400, kFuzzNow + 86400);
    FUZZ_CHECK(c.ok(), "fuzz CA: %s", c.status().message().c_str());
    return std::move(c).value();
  }();
  return cert;
}

// Device i's SecAgg signing key.
inline crypto::SigningKey FuzzSigningKey(int i) {
  crypto::Secret32 seed;
  for (size_t b = 0; b < seed.size(); ++b) seed.data()[b] = static_cast<uint8_t>(0xa0 + i + b);
  return crypto::SigningKey::FromSeed(seed);
}

// A device certificate (PEM) from the fuzz CA for `id`, certifying `secagg_public_key`.
inline std::string FuzzDeviceCert(const std::string& id, const std::string& secagg_public_key) {
  static const std::string tls_key = crypto::PublicKeyOf(crypto::GenerateP256Key().value()).value();
  crypto::CertRequest r;
  r.public_key_pem = tls_key;
  r.common_name = id;
  r.role = crypto::CertRole::kDevice;
  r.not_before = kFuzzNow - 300;
  r.not_after = kFuzzNow + 3600;
  r.secagg_public_key = secagg_public_key;
  StatusOr<std::string> c = crypto::IssueCertificate(FuzzCaCert(), FuzzCaKey(), r);
  FUZZ_CHECK(c.ok(), "device certificate: %s", c.status().message().c_str());
  return std::move(c).value();
}

}  // namespace fleet::fuzz
