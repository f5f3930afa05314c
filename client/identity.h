// A device's identity: its own P-256 key (generated here, never sent anywhere), a short-lived
// certificate from the fleet CA obtained by enrolling with a bootstrap token, renewed over mTLS
// at 2/3 of its lifetime, and the coordinator's model-signing key learned at enrollment.
//
// Files in the client's state_dir (0600): device.key, device.pem, ca.pem (the pinned CA),
// model-signing.pub (hex). The bootstrap file is YAML:
//   coordinator: coord.example.org:7443
//   ca_cert: |            # PEM of the fleet CA to pin (or ca_cert_file: path)
//     -----BEGIN CERTIFICATE-----
//   token: fleet1_...     # from `fleetctl token create`
//   server_name: ...      # optional, name expected in the coordinator's certificate
#pragma once

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
};
StatusOr<Bootstrap> LoadBootstrap(const std::string& path);

struct DeviceCredentials {
  std::string key_pem, cert_pem, ca_pem;
  crypto::Bytes32 model_key{};
  crypto::CertInfo cert;
  ClientTlsOptions Tls(const std::string& server_name) const;
};

// When to renew: 2/3 into the certificate's lifetime (not counting its clock-skew backdating).
int64_t RenewalTime(const crypto::CertInfo& cert);

// Credentials in `state_dir` for `device_id` that chain to the pinned CA and are valid at `now`.
// NotFound when there are none; another error names what is wrong with the ones there.
StatusOr<DeviceCredentials> LoadCredentials(const std::string& state_dir,
                                            const std::string& device_id, int64_t now);

// Generates a key, sends a CSR with the bootstrap token over server-authenticated TLS pinned to
// the bootstrap CA, verifies and stores what comes back.
StatusOr<DeviceCredentials> EnrollDevice(const ClientConfig& config, const Bootstrap& bootstrap,
                                         int64_t now);

// A new key and certificate over the current mTLS channel; stored on success.
StatusOr<DeviceCredentials> RenewCertificate(v1::Device::Stub* stub, const ClientConfig& config,
                                             const DeviceCredentials& current, int64_t now);

}  // namespace fleet
