#include "coordinator/access.h"

#include <sodium.h>

#include "common/log.h"
#include "crypto/random.h"

namespace fleet {
namespace {

constexpr char kTokenPrefix[] = "fleet1_";
constexpr size_t kTokenIdHex = 16, kTokenSecretHex = 64;
constexpr size_t kMaxPeerCache = 20000;

std::string HashSecret(const std::string& secret) {
  unsigned char h[32];
  crypto_generichash(h, sizeof h, reinterpret_cast<const unsigned char*>(secret.data()),
                     secret.size(), reinterpret_cast<const unsigned char*>("fleetfl token"), 13);
  return std::string(reinterpret_cast<const char*>(h), sizeof h);
}

}  // namespace

AccessControl::AccessControl(JobStore* store, AuditLog* audit, bool insecure,
                             std::function<int64_t()> now)
    : store_(store), audit_(audit), insecure_(insecure), now_(std::move(now)) {}

Status AccessControl::Load() {
  ASSIGN_OR_RETURN(std::vector<v1::TokenRecord> tokens, store_->LoadTokens());
  ASSIGN_OR_RETURN(std::vector<v1::DeviceRevocation> revoked, store_->LoadRevocations());
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& t : tokens) tokens_[t.info().id()] = std::move(t);
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
  return OkStatus();
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

StatusOr<std::pair<std::string, v1::TokenInfo>> AccessControl::CreateToken(
    int64_t ttl_s, uint32_t uses, const std::string& label, const std::string& by) {
  if (ttl_s <= 0 || ttl_s > 366LL * 86400) return InvalidArgument("token ttl must be 1s..366d");
  if (uses == 0 || uses > 1000000) return InvalidArgument("token uses must be 1..1000000");
  if (label.size() > 200) return InvalidArgument("token label longer than 200 characters");
  std::string id = crypto::RandomHex(kTokenIdHex / 2);
  std::string secret = crypto::RandomHex(kTokenSecretHex / 2);
  v1::TokenRecord rec;
  v1::TokenInfo* info = rec.mutable_info();
  info->set_id(id);
  info->set_label(label);
  info->set_uses_total(uses);
  info->set_uses_left(uses);
  info->set_created_unix(now_());
  info->set_expires_unix(now_() + ttl_s);
  rec.set_secret_hash(HashSecret(secret));
  // Fail closed: a credential nobody can account for is never made.
  Status audited = audit_->Append(
      "token_create", by, {{"token_id", id}, {"label", label}, {"uses", uses}, {"ttl_s", ttl_s}});
  if (!audited.ok()) {
    sodium_memzero(secret.data(), secret.size());
    return Internal("token not created: it cannot be recorded in the audit log (" +
                    audited.message() + ")");
  }
  RETURN_IF_ERROR(store_->SaveToken(rec));
  {
    std::lock_guard<std::mutex> lock(mu_);
    tokens_[id] = rec;
  }
  std::string token = kTokenPrefix + id + "_" + secret;
  sodium_memzero(secret.data(), secret.size());
  return std::make_pair(token, *info);
}

std::vector<v1::TokenInfo> AccessControl::ListTokens() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::TokenInfo> out;
  for (const auto& [id, rec] : tokens_) out.push_back(rec.info());
  return out;
}

StatusOr<v1::TokenInfo> AccessControl::RevokeToken(const std::string& id, const std::string& by) {
  v1::TokenRecord rec;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tokens_.find(id);
    if (it == tokens_.end()) return NotFound("no token with id " + id);
    rec = it->second;
  }
  rec.mutable_info()->set_revoked(true);
  RETURN_IF_ERROR(store_->SaveToken(rec));
  {
    std::lock_guard<std::mutex> lock(mu_);
    tokens_[id] = rec;
  }
  // Fail safe: the revocation holds either way; the admin learns it is not on record.
  Status audited = audit_->Append("token_revoke", by, {{"token_id", id}});
  if (!audited.ok()) {
    return Internal("token " + id +
                    " is revoked (in force now), but the revocation is NOT in "
                    "the audit log: " +
                    audited.message());
  }
  return rec.info();
}

Status AccessControl::UseToken(const std::string& token, const std::string& device_id) {
  // Audit records are fsynced: append them only after mu_ is released.
  auto refuse = [&](const std::string& token_id, const std::string& why) {
    (void)audit_->Append("enroll_refused", device_id, {{"token_id", token_id}, {"reason", why}});
    return Unauthenticated("bootstrap token refused: " + why);
  };
  const size_t prefix = sizeof kTokenPrefix - 1;
  if (token.size() != prefix + kTokenIdHex + 1 + kTokenSecretHex ||
      token.compare(0, prefix, kTokenPrefix) != 0 || token[prefix + kTokenIdHex] != '_') {
    return refuse("", "malformed token (expected fleet1_<16 hex>_<64 hex>)");
  }
  const std::string id = token.substr(prefix, kTokenIdHex);
  std::string secret = token.substr(prefix + kTokenIdHex + 1);
  const std::string hash = HashSecret(secret);
  sodium_memzero(secret.data(), secret.size());
  std::string why;
  uint32_t uses_left = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tokens_.find(id);
    if (it == tokens_.end()) {
      why = "unknown token";
    } else if (!crypto::ConstantTimeEqual(hash, it->second.secret_hash())) {
      why = "invalid token";
    } else if (it->second.info().revoked()) {
      why = "token revoked";
    } else if (now_() >= it->second.info().expires_unix()) {
      why = "token expired";
    } else if (it->second.info().uses_left() == 0) {
      why = "token has no uses left";
    } else {
      v1::TokenRecord rec = it->second;
      rec.mutable_info()->set_uses_left(rec.info().uses_left() - 1);
      // Persisted before any certificate is issued; under mu_ so two enrollments cannot spend
      // the same last use.
      RETURN_IF_ERROR(store_->SaveToken(rec));
      it->second = rec;
      uses_left = rec.info().uses_left();
    }
  }
  if (!why.empty()) return refuse(id, why);
  // Part of the enrollment, which fails closed (the use stays spent).
  Status audited =
      audit_->Append("token_use", device_id, {{"token_id", id}, {"uses_left", uses_left}});
  if (!audited.ok()) {
    return Unavailable(
        "enrollment not completed: the token use cannot be recorded in the audit "
        "log (" +
        audited.message() + ")");
  }
  return OkStatus();
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

bool AccessControl::IsRevoked(const std::string& device_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return revoked_.count(device_id) > 0;
}

}  // namespace fleet
