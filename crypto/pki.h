// X.509 for fleetfl's private PKI, on OpenSSL 3: P-256 keys, the CA, certificate signing
// requests and certificates, identity and chain checks. Keys and certificates travel as PEM.
//
// Identity is a SAN URI: fleetfl://device/<id>, fleetfl://admin/<name> (administrators of a
// coordinator), fleetfl://coordinator/<name> (a coordinator's client identity towards a separate
// CA) or fleetfl://ca-admin/<name> (administrators of a separate CA: they create tokens). Server
// certificates have no URI (extendedKeyUsage serverAuth, DNS/IP SANs). Times are Unix seconds so
// callers inject their clock. Thread-safe: no shared state.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace fleet::crypto {

enum class CertRole { kNone, kDevice, kAdmin, kCoordinator, kCaAdmin };

// The X.509 extension (non-critical) that certifies a device's Ed25519 secure-aggregation signing
// key: extnValue is the DER OCTET STRING of the 32-byte public key. The OID is in the UUID arc
// 2.25 (ITU-T X.667), which needs no registration. A CSR asks for it (requested extension); the
// CA copies it into the certificate only after checking it, so only the CA binds (id, key).
inline constexpr char kSecAggKeyOid[] = "2.25.212508740644703452248107316229240816014";
inline constexpr size_t kSecAggKeyBytes = 32;

// Issued certificates start this far in the past, for devices whose clocks run behind; the
// device's renewal schedule discounts it.
constexpr int64_t kCertBackdateS = 300;

// "fleetfl://device/ID" etc.; kNone gives "".
std::string IdentityUri(CertRole role, const std::string& id);

// A fresh P-256 private key, PKCS#8 PEM. Treat as secret: write 0600, never log.
StatusOr<std::string> GenerateP256Key();

// Self-signed CA certificate (basicConstraints CA:TRUE, pathlen 0).
StatusOr<std::string> MakeCaCertificate(const std::string& ca_key_pem, const std::string& name,
                                        int64_t not_before, int64_t not_after);

struct CertRequest {
  std::string public_key_pem;  // subject key (from a verified CSR, or derived from a key)
  std::string common_name;
  CertRole role = CertRole::kNone;     // adds the identity URI and clientAuth
  std::vector<std::string> dns_names;  // server certificates: adds serverAuth
  std::vector<std::string> ip_addresses;
  int64_t not_before = 0;
  int64_t not_after = 0;
  std::string secagg_public_key;  // 32 raw bytes: adds the kSecAggKeyOid extension; or empty
};

// A certificate for `req`, signed by the CA; a random 128-bit serial.
StatusOr<std::string> IssueCertificate(const std::string& ca_cert_pem,
                                       const std::string& ca_key_pem, const CertRequest& req);

// The public key of a private key, as SubjectPublicKeyInfo PEM.
StatusOr<std::string> PublicKeyOf(const std::string& key_pem);

// A PKCS#10 request for `common_name`, signed with `key_pem`; with a 32-byte
// `secagg_public_key` it also requests the kSecAggKeyOid extension.
StatusOr<std::string> MakeCsr(const std::string& key_pem, const std::string& common_name,
                              const std::string& secagg_public_key = "");

// The DER encoding of a PEM CSR (what enrollment proofs and renewal signatures cover).
StatusOr<std::string> CsrDer(const std::string& pem);

// ECDSA-SHA256 signature (DER) of `message` with the P-256 private key `key_pem`.
StatusOr<std::string> SignWithKey(const std::string& key_pem, std::string_view message);
// True when `signature` is an ECDSA-SHA256 signature of `message` by the key of `cert_pem`.
bool VerifyWithCertificate(const std::string& cert_pem, std::string_view message,
                           std::string_view signature);

struct CsrInfo {
  std::string common_name;
  std::string public_key_pem;
  std::string secagg_public_key;  // 32 raw bytes when requested, else empty
};
// Parses a CSR and checks its self-signature and that its key is P-256. Any other input is an
// InvalidArgument naming what is wrong.
StatusOr<CsrInfo> ParseCsr(const std::string& pem);

struct CertInfo {
  std::string serial;  // lowercase hex
  std::string common_name;
  CertRole role = CertRole::kNone;
  std::string id;  // from the identity URI
  int64_t not_before = 0;
  int64_t not_after = 0;
  std::string secagg_public_key;  // 32 raw bytes from the kSecAggKeyOid extension, or empty
};
// Parses a PEM certificate. A kSecAggKeyOid extension that is repeated or not a 32-byte OCTET
// STRING is an InvalidArgument.
StatusOr<CertInfo> ParseCertificate(const std::string& pem);

// Chain to `ca_cert_pem` valid at time `now` (signature, validity period, CA constraints).
Status VerifyCertificate(const std::string& cert_pem, const std::string& ca_cert_pem, int64_t now);

// The DER encoding of a PEM certificate: what secure aggregation relays (a quarter smaller).
StatusOr<std::string> CertificateDer(const std::string& pem);

// Verifies DER certificates against one pinned CA, e.g. a device checking the certificates of its
// secure-aggregation neighbours. A certificate that passed is remembered by the BLAKE2b-256 hash
// of its bytes, so seeing it again costs a hash instead of parsing and an ECDSA verification; its
// validity period (intersected with the CA's) is still checked against `now` on every call, cached
// or not. Failures are not cached. At most `max_cached` entries (then the cache starts over).
// Thread-safe.
class CertificateVerifier {
 public:
  static StatusOr<std::unique_ptr<CertificateVerifier>> Create(const std::string& ca_cert_pem,
                                                               size_t max_cached = 4096);
  ~CertificateVerifier();
  CertificateVerifier(const CertificateVerifier&) = delete;
  CertificateVerifier& operator=(const CertificateVerifier&) = delete;

  // The certificate's contents when it chains to the CA and is valid at `now`; otherwise
  // Unauthenticated (or InvalidArgument for bytes that are not a certificate) naming the check
  // that failed.
  StatusOr<CertInfo> Verify(std::string_view der, int64_t now) const;
  // Signature verifications done so far (cache misses that reached OpenSSL).
  uint64_t full_verifications() const;

 private:
  struct Impl;
  explicit CertificateVerifier(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// True when `key_pem` is the private key of `cert_pem`.
bool KeyMatchesCertificate(const std::string& key_pem, const std::string& cert_pem);

}  // namespace fleet::crypto
