#include "coordinator/access.h"

#include <sodium.h>

#include <cstring>

#include "common/config.h"
#include "common/file_util.h"
#include "common/log.h"
#include "crypto/random.h"

namespace fleet {
namespace {

constexpr char kTokenPrefix[] = "fleet1_";
constexpr size_t kTokenIdHex = 16, kTokenSecretHex = 64, kTokenSaltBytes = 16;
constexpr size_t kMaxPeerCache = 20000;

// Tokens made before schema v7: an unkeyed BLAKE2b-256 of the secret.
std::string LegacyHashSecret(const std::string& secret) {
  unsigned char h[32];
  crypto_generichash(h, sizeof h, reinterpret_cast<const unsigned char*>(secret.data()),
                     secret.size(), reinterpret_cast<const unsigned char*>("fleetfl token"), 13);
  return std::string(reinterpret_cast<const char*>(h), sizeof h);
}

// A token's binding as validated input: at most one of the two, each like a device id.
Status ValidateBinding(const std::string& device_id, const std::string& id_prefix) {
  if (!device_id.empty() && !id_prefix.empty()) {
    return InvalidArgument("a token is bound to one device id or to an id prefix, not both");
  }
  if (!device_id.empty()) {
    Status s = ValidateDeviceId(device_id);
    if (!s.ok()) return InvalidArgument("token --device-id: " + s.message());
  }
  if (!id_prefix.empty()) {
    Status s = ValidateDeviceId(id_prefix);
    if (!s.ok() || id_prefix.size() > 127) {
      return InvalidArgument(
          "token --id-prefix: must be 1..127 of the characters of a device "
          "id (letters, digits, '-', '_', '.')");
    }
  }
  return OkStatus();
}

}  // namespace

AccessControl::AccessControl(JobStore* store, AuditLog* audit, DeviceCertificates* certs,
                             bool insecure, std::function<int64_t()> now)
    : store_(store), audit_(audit), certs_(certs), insecure_(insecure), now_(std::move(now)) {}

AccessControl::~AccessControl() = default;

Status AccessControl::Load(const std::string& token_key_path) {
  ASSIGN_OR_RETURN(std::vector<v1::TokenRecord> tokens, store_->LoadTokens());
  ASSIGN_OR_RETURN(std::vector<v1::DeviceRevocation> revoked, store_->LoadRevocations());
  if (!FileExists(token_key_path)) {
    size_t keyed = 0;
    for (const auto& t : tokens) keyed += t.salt().empty() ? 0 : 1;
    RETURN_IF_ERROR(CreateAuditKey(token_key_path));  // 32 random bytes, never replacing a file
    if (keyed > 0) {
      FLEET_LOG(Warn) << "made a new token key " << token_key_path << ": the old one is missing, "
                      << keyed << " tokens made with it no longer verify (create new ones)";
    }
  }
  StatusOr<AuditKey> key = LoadAuditKey(token_key_path);
  if (!key.ok()) return Status(key.status().code(), "token key: " + key.status().message());
  std::memcpy(token_key_.data(), key->data(), token_key_.size());
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& t : tokens) tokens_[t.info().id()] = std::move(t);
  for (auto& r : revoked) revoked_[r.device_id()] = std::move(r);
  return OkStatus();
}

std::string AccessControl::TokenSecret(const std::string& id, const std::string& salt) const {
  static constexpr char kDomain[] = "fleetfl token secret v1";
  crypto_generichash_state st;
  crypto_generichash_init(&st, token_key_.data(), token_key_.size(), 32);
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(kDomain), sizeof kDomain);
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(id.data()), id.size());
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(salt.data()), salt.size());
  crypto::Secret32 mac;
  crypto_generichash_final(&st, mac.data(), mac.size());
  sodium_memzero(&st, sizeof st);
  return crypto::ToHex(mac.data(), mac.size());
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

StatusOr<std::pair<std::string, v1::TokenInfo>> AccessControl::CreateToken(const TokenSpec& spec,
                                                                           const std::string& by) {
  if (spec.ttl_s <= 0 || spec.ttl_s > 366LL * 86400) {
    return InvalidArgument("token ttl must be 1s..366d");
  }
  if (spec.uses == 0 || spec.uses > 1000000) {
    return InvalidArgument("token uses must be 1..1000000");
  }
  if (spec.label.size() > 200) return InvalidArgument("token label longer than 200 characters");
  RETURN_IF_ERROR(ValidateBinding(spec.device_id, spec.id_prefix));
  std::string id = crypto::RandomHex(kTokenIdHex / 2);
  std::string salt(kTokenSaltBytes, '\0');
  randombytes_buf(salt.data(), salt.size());
  v1::TokenRecord rec;
  v1::TokenInfo* info = rec.mutable_info();
  info->set_id(id);
  info->set_label(spec.label);
  info->set_uses_total(spec.uses);
  info->set_uses_left(spec.uses);
  info->set_created_unix(now_());
  info->set_expires_unix(now_() + spec.ttl_s);
  info->set_device_id(spec.device_id);
  info->set_id_prefix(spec.id_prefix);
  rec.set_salt(salt);
  // Fail closed: a credential nobody can account for is never made.
  nlohmann::json fields = {
      {"token_id", id}, {"label", spec.label}, {"uses", spec.uses}, {"ttl_s", spec.ttl_s}};
  if (!spec.device_id.empty()) fields["device_id"] = spec.device_id;
  if (!spec.id_prefix.empty()) fields["id_prefix"] = spec.id_prefix;
  Status audited = audit_->Append("token_create", by, std::move(fields));
  if (!audited.ok()) {
    return Internal("token not created: it cannot be recorded in the audit log (" +
                    audited.message() + ")");
  }
  RETURN_IF_ERROR(store_->SaveToken(rec));
  {
    std::lock_guard<std::mutex> lock(mu_);
    tokens_[id] = rec;
  }
  std::string secret = TokenSecret(id, salt);
  std::string token = kTokenPrefix + id + "_" + secret;
  sodium_memzero(secret.data(), secret.size());
  return std::make_pair(std::move(token), *info);
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

// A token's state and binding, for `device_id` (the secret was checked already).
Status AccessControl::CheckTokenLocked(const v1::TokenRecord& rec, const std::string& device_id,
                                       std::string* reason) const {
  const v1::TokenInfo& info = rec.info();
  auto refuse = [&](const std::string& why, const std::string& detail = "") {
    *reason = why;
    return Unauthenticated("bootstrap token refused: " + why + detail);
  };
  if (info.revoked()) return refuse("token revoked");
  if (now_() >= info.expires_unix()) return refuse("token expired");
  if (info.uses_left() == 0) return refuse("token has no uses left");
  if (!info.device_id().empty() && info.device_id() != device_id) {
    *reason = "token bound to another device id";
    return PermissionDenied("bootstrap token " + info.id() + " is bound to device '" +
                            info.device_id() + "' and cannot enroll '" + device_id + "'");
  }
  if (!info.id_prefix().empty() &&
      device_id.compare(0, info.id_prefix().size(), info.id_prefix()) != 0) {
    *reason = "token bound to another id prefix";
    return PermissionDenied("bootstrap token " + info.id() +
                            " enrolls only device ids that "
                            "start with '" +
                            info.id_prefix() + "', not '" + device_id + "'");
  }
  return OkStatus();
}

StatusOr<std::string> AccessControl::CheckToken(const std::string& token,
                                                const std::string& device_id, std::string* reason,
                                                std::string* token_id) const {
  token_id->clear();
  const size_t prefix = sizeof kTokenPrefix - 1;
  if (token.size() != prefix + kTokenIdHex + 1 + kTokenSecretHex ||
      token.compare(0, prefix, kTokenPrefix) != 0 || token[prefix + kTokenIdHex] != '_') {
    *reason = "malformed token";
    return Unauthenticated(
        "bootstrap token refused: malformed token (expected fleet1_<16 hex>_<64 hex>)");
  }
  const std::string id = token.substr(prefix, kTokenIdHex);
  *token_id = id;
  std::string secret = token.substr(prefix + kTokenIdHex + 1);
  v1::TokenRecord rec;
  bool found = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tokens_.find(id);
    if (it != tokens_.end()) {
      rec = it->second;
      found = true;
    }
  }
  bool valid = false;
  if (found && !rec.salt().empty()) {
    std::string expected = TokenSecret(id, rec.salt());
    valid = crypto::ConstantTimeEqual(secret, expected);
    sodium_memzero(expected.data(), expected.size());
  } else if (found) {
    valid = crypto::ConstantTimeEqual(LegacyHashSecret(secret), rec.secret_hash());
  }
  sodium_memzero(secret.data(), secret.size());
  if (!found || !valid) {
    *reason = found ? "invalid token" : "unknown token";
    return Unauthenticated("bootstrap token refused: " + *reason);
  }
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(CheckTokenLocked(rec, device_id, reason));
  return id;
}

Status AccessControl::SpendToken(const std::string& token_id, const std::string& device_id) {
  uint32_t uses_left = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tokens_.find(token_id);
    if (it == tokens_.end()) return Unauthenticated("bootstrap token refused: unknown token");
    std::string reason;
    // Again under mu_: two enrollments cannot spend the same last use, and a revocation since
    // CheckToken counts.
    RETURN_IF_ERROR(CheckTokenLocked(it->second, device_id, &reason));
    v1::TokenRecord rec = it->second;
    rec.mutable_info()->set_uses_left(rec.info().uses_left() - 1);
    // Persisted before any certificate is issued.
    RETURN_IF_ERROR(store_->SaveToken(rec));
    it->second = rec;
    uses_left = rec.info().uses_left();
  }
  // Part of the enrollment, which fails closed (the use stays spent). Audit records are fsynced:
  // appended after mu_ is released.
  Status audited =
      audit_->Append("token_use", device_id, {{"token_id", token_id}, {"uses_left", uses_left}});
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
