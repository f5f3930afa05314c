// Who may call what. Device RPCs need an mTLS client certificate from the fleet CA whose SAN URI
// names the device id in the request, that has not expired (checked per call against the
// injected clock, so a long-lived connection cannot outlive its certificate) and whose device
// has not been revoked. Admin RPCs need an admin certificate. Enrollment needs a bootstrap
// token. Also owns the tokens, the revocations and the open calls of each device (cancelled on
// revocation). Thread-safe.
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
#include "coordinator/store.h"
#include "crypto/pki.h"

namespace fleet {

struct Peer {
  crypto::CertRole role = crypto::CertRole::kNone;
  std::string id;  // device id or admin name
  std::string serial;
  int64_t not_before = 0, not_after = 0;
};

class AccessControl {
 public:
  // `insecure`: the server has no TLS; every call is let through (with the warning printed at
  // startup) and identities are the ones claimed in requests.
  AccessControl(JobStore* store, AuditLog* audit, bool insecure, std::function<int64_t()> now);
  Status Load();

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
  StatusOr<std::pair<std::string, v1::TokenInfo>> CreateToken(int64_t ttl_s, uint32_t uses,
                                                               const std::string& label,
                                                               const std::string& by);
  std::vector<v1::TokenInfo> ListTokens() const;
  StatusOr<v1::TokenInfo> RevokeToken(const std::string& id, const std::string& by);
  // Consumes one use of `token` for `device_id` (persisted before returning).
  Status UseToken(const std::string& token, const std::string& device_id);

  // ---- devices
  // Refuses every certificate of the device from now on, cancels its open calls and bars it
  // from enrolling again. Returns the number of calls cancelled. The caller records it in the
  // audit log (Coordinator::RevokeDevice, after the registry dropped the device too).
  StatusOr<uint32_t> RevokeDevice(const std::string& id, const std::string& by);
  bool IsRevoked(const std::string& device_id) const;

  bool insecure() const { return insecure_; }
  int64_t now() const { return now_(); }

 private:
  JobStore* store_;
  AuditLog* audit_;
  const bool insecure_;
  std::function<int64_t()> now_;

  mutable std::mutex mu_;
  std::map<std::string, v1::TokenRecord> tokens_;         // by id
  std::map<std::string, v1::DeviceRevocation> revoked_;   // by device id
  std::map<std::string, std::set<grpc::ServerContextBase*>> calls_;
  mutable std::map<std::string, Peer> peer_cache_;  // client certificate PEM -> identity
};

}  // namespace fleet
