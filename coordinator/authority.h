// The coordinator's PKI and model-signing identity, kept in <state_dir>/pki (all files 0600):
//   ca.pem ca.key             the fleet CA (P-256), signs server, admin and device certificates
//   server.pem server.key     the coordinator's TLS certificate
//   admin.pem admin.key       the first administrator's client certificate (for fleetctl)
//   model-signing.key         Ed25519 seed (hex) that signs every global model
//   audit.key                 32 random bytes: the MAC key of STATE_DIR/audit.log
//   token.key                 32 random bytes: bootstrap token secrets are MACs under it
//   ca-client.pem ca-client.key   a coordinator's identity towards a separate CA
//                             (fleetfl://coordinator/<name>; InitSeparateCa only)
// InitPki creates them once (`fleet-coordinator init`); Authority loads them to serve.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "crypto/keys.h"
#include "crypto/pki.h"

namespace fleet {

using crypto::kCertBackdateS;

struct PkiPaths {
  explicit PkiPaths(const std::string& state_dir);
  std::string dir, ca_cert, ca_key, server_cert, server_key, admin_cert, admin_key, model_key,
      audit_key, token_key, ca_client_cert, ca_client_key;
};

struct InitOptions {
  std::vector<std::string> dns_names{"localhost"};
  std::vector<std::string> ip_addresses{"127.0.0.1"};
  std::string admin_name = "admin";
  int64_t ca_lifetime_s = 10 * 365 * 86400;
  int64_t server_lifetime_s = 365 * 86400;
  int64_t admin_lifetime_s = 365 * 86400;
};

// Creates the PKI under state_dir/pki (state_dir and pki 0700). Refuses (AlreadyExists) if a CA
// key is already there. Audit and token keys already there (from a start without a PKI) are
// kept.
Status InitPki(const std::string& state_dir, const InitOptions& options, int64_t now);

struct SeparateCaOptions {
  InitOptions ca;  // the CA listener's names, lifetimes, the coordinator admin's name
  std::string ca_admin_name = "ca-admin";
  std::string coordinator_name = "coordinator";
  std::vector<std::string> coordinator_dns_names{"localhost"};
  std::vector<std::string> coordinator_ip_addresses{"127.0.0.1"};
};

// `fleet-coordinator ca init`: the PKI of a CA that lives apart from the coordinator. In
// ca_dir/pki: ca.pem and ca.key, server.pem/.key (the CA's listener), admin.pem/.key (a
// fleetfl://ca-admin/ certificate, for `ca token ...`), token.key, audit.key. In
// coordinator_dir/pki everything `init` makes except ca.key, plus ca-client.pem/.key (the
// coordinator's fleetfl://coordinator/ identity towards the CA). Refuses (AlreadyExists) when
// either already holds a PKI.
Status InitSeparateCa(const std::string& ca_dir, const std::string& coordinator_dir,
                      const SeparateCaOptions& options, int64_t now);

class Authority {
 public:
  // ca.pem, and ca.key when `ca_key` (the coordinator of a separate CA holds none), and the model
  // key when `model_key` (a separate CA has none).
  static StatusOr<std::unique_ptr<Authority>> Load(const std::string& state_dir, bool ca_key = true,
                                                   bool model_key = true);
  ~Authority();
  bool can_issue() const { return !ca_key_pem_.empty(); }
  bool has_model_key() const { return model_key_ != nullptr; }

  // A verified CSR whose common name is `device_id` (PermissionDenied otherwise) and that passes
  // CheckDeviceCsr (InvalidArgument, "bad CSR: ...").
  static StatusOr<crypto::CsrInfo> CheckCsrFor(const std::string& device_id,
                                               const std::string& csr_pem);

  // A device certificate for a verified CSR: CN and SAN URI = device_id, and the CSR's Ed25519
  // secure-aggregation key in the kSecAggKeyOid extension. A CSR without a valid such key is an
  // InvalidArgument (CheckDeviceCsr; every shipped client requests one).
  static Status CheckDeviceCsr(const crypto::CsrInfo& csr);
  StatusOr<std::string> IssueDeviceCertificate(const crypto::CsrInfo& csr,
                                               const std::string& device_id, int64_t now,
                                               int64_t lifetime_s) const;
  const std::string& ca_pem() const { return ca_pem_; }
  // Requires has_model_key().
  const crypto::SigningKey& model_key() const { return *model_key_; }

 private:
  Authority() = default;
  std::string ca_pem_, ca_key_pem_;
  std::unique_ptr<crypto::SigningKey> model_key_;
};

}  // namespace fleet
