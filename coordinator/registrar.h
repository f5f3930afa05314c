// The registrar: who may get a device certificate. It owns the CA key, the bootstrap tokens
// (their bindings, use counts and the key their secrets are MACs under) and each device id's
// current certificate, and it authorizes every issue itself:
//   Enroll  a token proof (crypto/enroll_token.h) over (device id, CSR DER), a token that is
//           valid, bound to that id (if bound) and has uses left, and an id without a valid
//           certificate; then a use is spent, the certificate issued, installed as the id's
//           current one and audited (fail closed: the record is put back);
//   Renew   the device's current certificate (chains to the CA, valid, recorded as current) and
//           an ECDSA signature by its key over RenewalMessage(id, new CSR DER, current serial);
//   ResetDevice, tokens   for administrators.
// So whoever relays requests to it (the coordinator) can neither mint certificates nor learn a
// token: a relayed proof yields at most a certificate for the CSR's own key.
//
// LocalRegistrar is the registrar itself: in the coordinator's process by default (sharing its
// store, audit log and DeviceCertificates), or in its own process behind the CertificateAuthority
// gRPC service (`fleet-coordinator ca serve`, CaService). RemoteRegistrar is a coordinator's
// client of such a process. Both are thread-safe.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/audit_log.h"
#include "common/grpc_util.h"
#include "common/status.h"
#include "coordinator/authority.h"
#include "coordinator/device_certs.h"
#include "coordinator/refusal_log.h"
#include "coordinator/store.h"
#include "crypto/secret.h"
#include "proto/fleet.grpc.pb.h"

namespace fleet {

// What `token create` asks for. At most one of device_id and id_prefix.
struct TokenSpec {
  int64_t ttl_s = 0;
  uint32_t uses = 0;
  std::string label, device_id, id_prefix;
};
// The spec of an Admin or CA CreateToken request.
TokenSpec TokenSpecOf(const v1::CreateTokenRequest& request);

class Registrar {
 public:
  virtual ~Registrar() = default;
  // True for a registrar in another process: this process holds no CA key and no tokens.
  virtual bool remote() const = 0;
  virtual StatusOr<v1::CaIssueResponse> Enroll(const v1::CaEnrollRequest& request) = 0;
  virtual StatusOr<v1::CaIssueResponse> Renew(const v1::CaRenewRequest& request) = 0;
  // Forgets the id's current certificate (audited first, fails closed) so it may enroll again.
  virtual StatusOr<v1::ResetDeviceResponse> ResetDevice(const std::string& device_id,
                                                        const std::string& by) = 0;
  // A new token (shown once) and its info. Fails closed: not made unless audited.
  virtual StatusOr<std::pair<std::string, v1::TokenInfo>> CreateToken(const TokenSpec& spec,
                                                                      const std::string& by) = 0;
  virtual StatusOr<std::vector<v1::TokenInfo>> ListTokens() = 0;
  virtual StatusOr<v1::TokenInfo> RevokeToken(const std::string& id, const std::string& by) = 0;
};

struct RegistrarOptions {
  int64_t device_cert_lifetime_s = 7 * 86400;
  std::function<int64_t()> now;  // Unix seconds, the clock of certificate decisions
};

class LocalRegistrar final : public Registrar {
 public:
  // `authority` must hold the CA key. Everything passed must outlive the registrar. Loads the
  // tokens, and the token key from `token_key_path` (made if missing: tokens made with a lost
  // key no longer verify, which is logged).
  static StatusOr<std::unique_ptr<LocalRegistrar>> Create(
      const Authority* authority, JobStore* store, AuditLog* audit, DeviceCertificates* certs,
      RefusalLog* refusals, const std::string& token_key_path, RegistrarOptions options);
  ~LocalRegistrar() override;

  bool remote() const override { return false; }
  StatusOr<v1::CaIssueResponse> Enroll(const v1::CaEnrollRequest& request) override;
  StatusOr<v1::CaIssueResponse> Renew(const v1::CaRenewRequest& request) override;
  StatusOr<v1::ResetDeviceResponse> ResetDevice(const std::string& device_id,
                                                const std::string& by) override;
  StatusOr<std::pair<std::string, v1::TokenInfo>> CreateToken(const TokenSpec& spec,
                                                              const std::string& by) override;
  StatusOr<std::vector<v1::TokenInfo>> ListTokens() override;
  StatusOr<v1::TokenInfo> RevokeToken(const std::string& id, const std::string& by) override;

 private:
  LocalRegistrar(const Authority* authority, JobStore* store, AuditLog* audit,
                 DeviceCertificates* certs, RefusalLog* refusals, RegistrarOptions options);
  // The secret of the token with this id and salt: BLAKE2b-256 keyed with the token key.
  crypto::Secret32 TokenSecret(const std::string& id, const std::string& salt) const;
  // A token's state and binding for `device_id`; *reason a fixed phrase on refusal.
  Status CheckTokenLocked(const v1::TokenRecord& rec, const std::string& device_id,
                          std::string* reason) const;
  // The token `token_id` proves (device_id, csr_der) and may enroll it; spends nothing.
  Status CheckProof(const std::string& token_id, const std::string& proof,
                    const std::string& device_id, const std::string& csr_der,
                    std::string* reason) const;
  Status SpendToken(const std::string& token_id, const std::string& device_id);
  // Issues for a checked CSR, installs (renewing: the serial it replaces), audits (fail closed).
  StatusOr<v1::CaIssueResponse> Issue(const std::string& device_id, const crypto::CsrInfo& csr,
                                      const char* event, const std::string& renewing);

  const Authority* const authority_;
  JobStore* const store_;
  AuditLog* const audit_;
  DeviceCertificates* const certs_;
  RefusalLog* const refusals_;
  const RegistrarOptions options_;
  crypto::Secret32 token_key_;  // set by Create
  mutable std::mutex mu_;
  std::map<std::string, v1::TokenRecord> tokens_;  // by id; guarded by mu_
};

// A coordinator's client of a separate CA process at `endpoint`, over mTLS with `tls` (the
// coordinator's fleetfl://coordinator/ certificate). Token methods are refused here: tokens are
// made at the CA so that the coordinator never sees one.
std::unique_ptr<Registrar> ConnectRegistrar(const std::string& endpoint,
                                            const ClientTlsOptions& tls);

}  // namespace fleet
