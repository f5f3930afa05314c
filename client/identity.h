// A device's identity: its own P-256 key (generated here, never sent anywhere), a short-lived
// certificate from the fleet CA obtained by enrolling with a bootstrap token, renewed over mTLS
// at 2/3 of its lifetime, and the coordinator's model-signing key learned at enrollment. The
// certificate also certifies the device's Ed25519 secure-aggregation signing key (kSecAggKeyOid),
// made here with the certificate key and rotated with it at every renewal, so neighbours in a
// secure round can check whose keys the coordinator relays.
//
// Files in the client's state_dir (0600, written atomically): device.key, device.pem, ca.pem (the
// pinned CA), model-signing.pub (hex), secagg-signing.key (hex Ed25519 seed; while a new
// certificate is being stored its seed waits in secagg-signing.key.pending, adopted at the next
// load if the certificate on disk certifies it). The bootstrap file is YAML:
//   coordinator: coord.example.org:7443
//   ca_cert: |            # PEM of the fleet CA to pin (or ca_cert_file: path)
//     -----BEGIN CERTIFICATE-----
//   token: fleet1_...     # from `fleetctl token create`
//   token_file: path      # or: a file holding only the token (0600), read into a buffer that
//                         # is wiped; relative to the bootstrap file's directory
//   server_name: ...      # optional, name expected in the coordinator's certificate
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "client/client_config.h"
#include "common/status.h"
#include "crypto/keys.h"
#include "crypto/pki.h"
#include "proto/fleet.grpc.pb.h"

namespace fleet {

struct Bootstrap {
  std::string coordinator, ca_pem, token, server_name;
  Bootstrap() = default;
  Bootstrap(const Bootstrap&) = default;
  Bootstrap& operator=(const Bootstrap&) = default;
  ~Bootstrap();  // wipes the token
};
StatusOr<Bootstrap> LoadBootstrap(const std::string& path);

struct DeviceCredentials {
  std::string key_pem, cert_pem, ca_pem;
  crypto::Bytes32 model_key{};
  crypto::CertInfo cert;
  // Signs secure-aggregation messages; its public key is cert.secagg_public_key. Null when the
  // certificate certifies no key (issued before certified SecAgg keys) or the stored seed is not
  // the certified one: `secagg_missing` says which, and the device must renew before it can take
  // part in a secure round.
  std::shared_ptr<const crypto::SigningKey> secagg_key;
  std::string secagg_missing;
  ClientTlsOptions Tls(const std::string& server_name) const;
};

// When to renew: 2/3 into the certificate's lifetime (not counting its clock-skew backdating).
int64_t RenewalTime(const crypto::CertInfo& cert);

// Credentials in `state_dir` for `device_id` that chain to the pinned CA and are valid at `now`.
// NotFound when there are none; another error names what is wrong with the ones there.
StatusOr<DeviceCredentials> LoadCredentials(const std::string& state_dir,
                                            const std::string& device_id, int64_t now);

// Generates a key and a SecAgg signing key, sends a CSR for both with the bootstrap token's id and
// a proof made with its secret (crypto/enroll_token.h; the secret is not sent) over
// server-authenticated TLS pinned to the bootstrap CA, verifies and stores what comes back.
// ResourceExhausted when the coordinator asks to retry later; then *retry_after (if given) is
// how long it asked to wait.
StatusOr<DeviceCredentials> EnrollDevice(const ClientConfig& config, const Bootstrap& bootstrap,
                                         int64_t now,
                                         std::chrono::milliseconds* retry_after = nullptr);

// A new key, SecAgg signing key and certificate over the current mTLS channel, the request signed
// with the current certificate's key (proof of possession); stored on success.
StatusOr<DeviceCredentials> RenewCertificate(v1::Device::Stub* stub, const ClientConfig& config,
                                             const DeviceCredentials& current, int64_t now);

}  // namespace fleet
