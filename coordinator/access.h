// Who may call what. Device RPCs need an mTLS client certificate from the fleet CA whose SAN URI
// names the device id in the request, that has not expired (checked per call against the
// injected clock, so a long-lived connection cannot outlive its certificate), that is the
// device's current certificate (DeviceCertificates: a renewal, re-enrollment or reset retires the
// old one) and whose device has not been revoked. Admin RPCs need an admin certificate.
// Enrollment needs a bootstrap token, which may be bound to one device id or an id prefix. Also
// owns the tokens, the revocations and the open calls of each device (cancelled on revocation
// and reset). Thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "common/audit_log.h"
#include "common/status.h"
#include "coordinator/device_certs.h"
#include "coordinator/store.h"
#include "crypto/pki.h"
#include "crypto/secret.h"

namespace fleet {

// What `fleetctl token create` asks for. At most one of device_id and id_prefix.
struct TokenSpec {
  int64_t ttl_s = 0;
  uint32_t uses = 0;
  std::string label, device_id, id_prefix;
};

struct Peer {
  crypto::CertRole role = crypto::CertRole::kNone;
  std::string id;  // device id or admin name
  std::string serial;
  int64_t not_before = 0, not_after = 0;
};

class AccessControl {
 public:
  // `insecure`: the server has no TLS; every call is let through (with the warning printed at
  // startup) and identities are the ones claimed in requests. `certs` must outlive this.
  AccessControl(JobStore* store, AuditLog* audit, DeviceCertificates* certs, bool insecure,
                std::function<int64_t()> now);
  ~AccessControl();
  // Loads tokens and revocations, and the token key from `token_key_path` (made if missing).
  Status Load(const std::string& token_key_path);

  // ---- calls
  // The verified certificate identity of the caller.
  StatusOr<Peer> Authenticate(const grpc::ServerContextBase& ctx) const;
  // A device RPC for `device_id`.
  Status CheckDevice(const grpc::ServerContextBase& ctx, const std::string& device_id) const;
  // An admin RPC; *who is the admin's name (for the audit trail).
  Status CheckAdmin(const grpc::ServerContextBase& ctx, std::string* who) const;

  // Registers an open call of a device so revocation can cancel it; unregisters on destruction.
  class CallGuard {
   public:
    CallGuard(AccessControl* ac, const std::string& device, grpc::ServerContextBase* ctx);
    ~CallGuard();
    CallGuard(const CallGuard&) = delete;
    CallGuard& operator=(const CallGuard&) = delete;

   private:
    AccessControl* ac_;
    std::string device_;
    grpc::ServerContextBase* ctx_;
  };

  // ---- tokens
  // A new token (shown once) and its info. Fails closed: not made unless audited.
  StatusOr<std::pair<std::string, v1::TokenInfo>> CreateToken(const TokenSpec& spec,
                                                              const std::string& by);
  std::vector<v1::TokenInfo> ListTokens() const;
  StatusOr<v1::TokenInfo> RevokeToken(const std::string& id, const std::string& by);
  // Whether `token` may enroll `device_id` now, spending nothing. Returns the token's id; on a
  // refusal *reason is a short fixed phrase for the audit log and *token_id the id ("" when the
  // token is malformed).
  StatusOr<std::string> CheckToken(const std::string& token, const std::string& device_id,
                                   std::string* reason, std::string* token_id) const;
  // Spends one use of the token `token_id` (CheckToken passed) for `device_id`: checked again
  // and persisted before it returns, then audited (fails closed).
  Status SpendToken(const std::string& token_id, const std::string& device_id);

  // ---- devices
  // Refuses every certificate of the device from now on, cancels its open calls and bars it
  // from enrolling again. Returns the number of calls cancelled. The caller records it in the
  // audit log (Coordinator::RevokeDevice, after the registry dropped the device too).
  StatusOr<uint32_t> RevokeDevice(const std::string& id, const std::string& by);
  bool IsRevoked(const std::string& device_id) const;
  // Cancels every open call of the device (after a reset). Returns how many.
  uint32_t CancelCalls(const std::string& device_id);
  DeviceCertificates& certificates() { return *certs_; }

  bool insecure() const { return insecure_; }
  int64_t now() const { return now_(); }

 private:
  // BLAKE2b-256 keyed with the token key: the secret of a token with this id and salt.
  std::string TokenSecret(const std::string& id, const std::string& salt) const;
  Status CheckTokenLocked(const v1::TokenRecord& rec, const std::string& device_id,
                          std::string* reason) const;

  JobStore* store_;
  AuditLog* audit_;
  DeviceCertificates* certs_;
  const bool insecure_;
  std::function<int64_t()> now_;
  crypto::Secret32 token_key_;  // set by Load

  mutable std::mutex mu_;
  std::map<std::string, v1::TokenRecord> tokens_;         // by id
  std::map<std::string, v1::DeviceRevocation> revoked_;   // by device id
  std::map<std::string, std::set<grpc::ServerContextBase*>> calls_;
  mutable std::map<std::string, Peer> peer_cache_;  // client certificate PEM -> identity
};

}  // namespace fleet
