// Who may call what. Device RPCs need an mTLS client certificate from the fleet CA whose SAN URI
// names the device id in the request, that has not expired (checked per call against the
// injected clock, so a long-lived connection cannot outlive its certificate), that is the
// device's current certificate (DeviceCertificates: a renewal, re-enrollment or reset retires the
// old one) and whose device has not been revoked. Admin RPCs need an admin certificate.
// Enrollment needs a bootstrap token (checked by the Registrar). Also owns the revocations and
// the open calls of each device (cancelled on revocation and reset). Thread-safe.
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
  // startup) and identities are the ones claimed in requests. `certs` must outlive this.
  AccessControl(JobStore* store, AuditLog* audit, DeviceCertificates* certs, bool insecure,
                std::function<int64_t()> now);
  ~AccessControl();
  // Loads the revocations.
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
  JobStore* store_;
  AuditLog* audit_;
  DeviceCertificates* certs_;
  const bool insecure_;
  std::function<int64_t()> now_;

  mutable std::mutex mu_;
  std::map<std::string, v1::DeviceRevocation> revoked_;   // by device id
  std::map<std::string, std::set<grpc::ServerContextBase*>> calls_;
  mutable std::map<std::string, Peer> peer_cache_;  // client certificate PEM -> identity
};

}  // namespace fleet
