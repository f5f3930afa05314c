#include "coordinator/access.h"

#include "common/log.h"

namespace fleet {
namespace {

constexpr size_t kMaxPeerCache = 20000;

}  // namespace

AccessControl::AccessControl(JobStore* store, AuditLog* audit, DeviceCertificates* certs,
                             bool insecure, std::function<int64_t()> now)
    : store_(store), audit_(audit), certs_(certs), insecure_(insecure), now_(std::move(now)) {}

AccessControl::~AccessControl() = default;

Status AccessControl::Load() {
  ASSIGN_OR_RETURN(std::vector<v1::DeviceRevocation> revoked, store_->LoadRevocations());
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& r : revoked) revoked_[r.device_id()] = std::move(r);
  return OkStatus();
}

StatusOr<Peer> AccessControl::Authenticate(const grpc::ServerContextBase& ctx) const {
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  std::vector<grpc::string_ref> pem =
      auth ? auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME)
           : std::vector<grpc::string_ref>();
  if (pem.empty()) {
    return Unauthenticated("no client certificate: this RPC needs mutual TLS with a certificate "
                           "from the fleet CA (devices enroll first; admins use admin.pem)");
  }
  std::string text(pem[0].data(), pem[0].size());
  Peer peer;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peer_cache_.find(text);
    if (it != peer_cache_.end()) peer = it->second;
  }
  if (peer.serial.empty()) {
    StatusOr<crypto::CertInfo> info = crypto::ParseCertificate(text);
    if (!info.ok()) return Unauthenticated("unreadable client certificate: " + info.status().message());
    peer.role = info->role;
    peer.id = info->id;
    peer.serial = info->serial;
    peer.not_before = info->not_before;
    peer.not_after = info->not_after;
    std::lock_guard<std::mutex> lock(mu_);
    if (peer_cache_.size() >= kMaxPeerCache) peer_cache_.clear();
    peer_cache_[text] = peer;
  }
  const int64_t t = now_();
  if (t >= peer.not_after) {
    return Unauthenticated("client certificate " + peer.serial + " of '" + peer.id +
                           "' expired; the device must renew or re-enroll");
  }
  if (t < peer.not_before) return Unauthenticated("client certificate is not valid yet");
  return peer;
}

Status AccessControl::CheckDevice(const grpc::ServerContextBase& ctx,
                                  const std::string& device_id) const {
  if (insecure_) return OkStatus();
  ASSIGN_OR_RETURN(Peer peer, Authenticate(ctx));
  if (peer.role != crypto::CertRole::kDevice) {
    return PermissionDenied("device RPCs need a device certificate; this one is not");
  }
  if (peer.id != device_id) {
    return PermissionDenied("certificate is for device '" + peer.id + "' but the request is for '" +
                            device_id + "'");
  }
  if (IsRevoked(peer.id)) return Unauthenticated("device '" + peer.id + "' has been revoked");
  return certs_->CheckCurrent(peer.id, peer.serial, peer.not_after, now_());
}

Status AccessControl::CheckAdmin(const grpc::ServerContextBase& ctx, std::string* who) const {
  if (insecure_) {
    *who = "insecure";
    return OkStatus();
  }
  ASSIGN_OR_RETURN(Peer peer, Authenticate(ctx));
  if (peer.role != crypto::CertRole::kAdmin) {
    return PermissionDenied("admin RPCs need an admin certificate" +
                            std::string(peer.role == crypto::CertRole::kDevice
                                            ? " (this is device '" + peer.id + "')"
                                            : ""));
  }
  *who = peer.id;
  return OkStatus();
}

AccessControl::CallGuard::CallGuard(AccessControl* ac, const std::string& device,
                                    grpc::ServerContextBase* ctx)
    : ac_(ac), device_(device), ctx_(ctx) {
  std::lock_guard<std::mutex> lock(ac_->mu_);
  ac_->calls_[device_].insert(ctx_);
}

AccessControl::CallGuard::~CallGuard() {
  std::lock_guard<std::mutex> lock(ac_->mu_);
  auto it = ac_->calls_.find(device_);
  if (it == ac_->calls_.end()) return;
  it->second.erase(ctx_);
  if (it->second.empty()) ac_->calls_.erase(it);
}

StatusOr<uint32_t> AccessControl::RevokeDevice(const std::string& id, const std::string& by) {
  v1::DeviceRevocation r;
  r.set_device_id(id);
  r.set_revoked_unix(now_());
  r.set_by(by);
  RETURN_IF_ERROR(store_->SaveRevocation(r));
  uint32_t cancelled = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    revoked_[id] = r;
    auto it = calls_.find(id);
    if (it != calls_.end()) {
      for (grpc::ServerContextBase* ctx : it->second) {
        ctx->TryCancel();
        ++cancelled;
      }
    }
  }
  FLEET_LOG(Warn) << "device " << id << " revoked by " << by << "; " << cancelled
                  << " open calls closed";
  return cancelled;
}

uint32_t AccessControl::CancelCalls(const std::string& device_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = calls_.find(device_id);
  if (it == calls_.end()) return 0;
  for (grpc::ServerContextBase* ctx : it->second) ctx->TryCancel();
  return static_cast<uint32_t>(it->second.size());
}

bool AccessControl::IsRevoked(const std::string& device_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return revoked_.count(device_id) > 0;
}

}  // namespace fleet
