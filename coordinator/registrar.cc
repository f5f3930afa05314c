#include "coordinator/registrar.h"

#include <sodium.h>

#include <cstring>

#include "common/config.h"
#include "common/file_util.h"
#include "common/log.h"
#include "crypto/enroll_token.h"
#include "crypto/random.h"

namespace fleet {

TokenSpec TokenSpecOf(const v1::CreateTokenRequest& request) {
  TokenSpec spec;
  spec.ttl_s = request.ttl_s();
  spec.uses = request.uses();
  spec.label = request.label();
  spec.device_id = request.device_id();
  spec.id_prefix = request.id_prefix();
  return spec;
}
namespace {

constexpr size_t kTokenSaltBytes = 16;

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

LocalRegistrar::LocalRegistrar(const Authority* authority, JobStore* store, AuditLog* audit,
                               DeviceCertificates* certs, RefusalLog* refusals,
                               RegistrarOptions options)
    : authority_(authority),
      store_(store),
      audit_(audit),
      certs_(certs),
      refusals_(refusals),
      options_(std::move(options)) {}

LocalRegistrar::~LocalRegistrar() = default;

StatusOr<std::unique_ptr<LocalRegistrar>> LocalRegistrar::Create(
    const Authority* authority, JobStore* store, AuditLog* audit, DeviceCertificates* certs,
    RefusalLog* refusals, const std::string& token_key_path, RegistrarOptions options) {
  if (authority == nullptr || !authority->can_issue()) {
    return FailedPrecondition("the registrar needs the CA key");
  }
  std::unique_ptr<LocalRegistrar> r(
      new LocalRegistrar(authority, store, audit, certs, refusals, std::move(options)));
  ASSIGN_OR_RETURN(std::vector<v1::TokenRecord> tokens, store->LoadTokens());
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
  std::memcpy(r->token_key_.data(), key->data(), r->token_key_.size());
  for (auto& t : tokens) r->tokens_[t.info().id()] = std::move(t);
  return r;
}

crypto::Secret32 LocalRegistrar::TokenSecret(const std::string& id, const std::string& salt) const {
  // Tokens made since schema v7 (crypto/enroll_token.h names the token format).
  static constexpr char kDomain[] = "fleetfl token secret v1";
  crypto_generichash_state st;
  crypto_generichash_init(&st, token_key_.data(), token_key_.size(), 32);
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(kDomain), sizeof kDomain);
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(id.data()), id.size());
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(salt.data()), salt.size());
  crypto::Secret32 mac;
  crypto_generichash_final(&st, mac.data(), mac.size());
  sodium_memzero(&st, sizeof st);
  return mac;
}

// ---------------------------------------------------------------- tokens

StatusOr<std::pair<std::string, v1::TokenInfo>> LocalRegistrar::CreateToken(const TokenSpec& spec,
                                                                            const std::string& by) {
  if (spec.ttl_s <= 0 || spec.ttl_s > 366LL * 86400) {
    return InvalidArgument("token ttl must be 1s..366d");
  }
  if (spec.uses == 0 || spec.uses > 1000000) {
    return InvalidArgument("token uses must be 1..1000000");
  }
  if (spec.label.size() > 200) return InvalidArgument("token label longer than 200 characters");
  RETURN_IF_ERROR(ValidateBinding(spec.device_id, spec.id_prefix));
  const int64_t now = options_.now();
  std::string id = crypto::RandomHex(crypto::kTokenIdHex / 2);
  std::string salt(kTokenSaltBytes, '\0');
  randombytes_buf(salt.data(), salt.size());
  v1::TokenRecord rec;
  v1::TokenInfo* info = rec.mutable_info();
  info->set_id(id);
  info->set_label(spec.label);
  info->set_uses_total(spec.uses);
  info->set_uses_left(spec.uses);
  info->set_created_unix(now);
  info->set_expires_unix(now + spec.ttl_s);
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
  return std::make_pair(crypto::FormatToken(id, TokenSecret(id, salt)), *info);
}

StatusOr<std::vector<v1::TokenInfo>> LocalRegistrar::ListTokens() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::TokenInfo> out;
  for (const auto& [id, rec] : tokens_) out.push_back(rec.info());
  return out;
}

StatusOr<v1::TokenInfo> LocalRegistrar::RevokeToken(const std::string& id, const std::string& by) {
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

Status LocalRegistrar::CheckTokenLocked(const v1::TokenRecord& rec, const std::string& device_id,
                                        std::string* reason) const {
  const v1::TokenInfo& info = rec.info();
  auto refuse = [&](const std::string& why) {
    *reason = why;
    return Unauthenticated("bootstrap token refused: " + why);
  };
  if (info.revoked()) return refuse("token revoked");
  if (options_.now() >= info.expires_unix()) return refuse("token expired");
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

Status LocalRegistrar::CheckProof(const std::string& token_id, const std::string& proof,
                                  const std::string& device_id, const std::string& csr_der,
                                  std::string* reason) const {
  if (!crypto::IsTokenId(token_id) || proof.size() != crypto::kTokenProofBytes) {
    *reason = "malformed token";
    return Unauthenticated(
        "bootstrap token refused: malformed token (expected fleet1_<16 hex>_<64 hex>)");
  }
  v1::TokenRecord rec;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tokens_.find(token_id);
    if (it == tokens_.end()) {
      *reason = "unknown token";
      return Unauthenticated("bootstrap token refused: unknown token");
    }
    rec = it->second;
  }
  if (rec.salt().empty()) {
    *reason = "token predates keyed tokens";
    return Unauthenticated(
        "bootstrap token refused: it was made by an older coordinator (its secret is stored "
        "only as a hash, so enrollment proofs cannot be checked): create a new token");
  }
  const crypto::Secret32 secret = TokenSecret(token_id, rec.salt());
  std::string expected = crypto::EnrollProof(secret, token_id, device_id, csr_der);
  const bool valid = crypto::ConstantTimeEqual(proof, expected);
  sodium_memzero(expected.data(), expected.size());
  if (!valid) {
    // A wrong secret, or a proof made for another device id or CSR.
    *reason = "invalid token";
    return Unauthenticated(
        "bootstrap token refused: invalid token (the proof does not match this token, device "
        "id and CSR)");
  }
  std::lock_guard<std::mutex> lock(mu_);
  return CheckTokenLocked(rec, device_id, reason);
}

Status LocalRegistrar::SpendToken(const std::string& token_id, const std::string& device_id) {
  uint32_t uses_left = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tokens_.find(token_id);
    if (it == tokens_.end()) return Unauthenticated("bootstrap token refused: unknown token");
    std::string reason;
    // Again under mu_: two enrollments cannot spend the same last use, and a revocation since
    // CheckProof counts.
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

// ---------------------------------------------------------------- certificates

StatusOr<v1::CaIssueResponse> LocalRegistrar::Issue(const std::string& device_id,
                                                    const crypto::CsrInfo& csr, const char* event,
                                                    const std::string& renewing) {
  const int64_t now = options_.now();
  ASSIGN_OR_RETURN(std::string cert, authority_->IssueDeviceCertificate(
                                         csr, device_id, now, options_.device_cert_lifetime_s));
  ASSIGN_OR_RETURN(crypto::CertInfo info, crypto::ParseCertificate(cert));
  // Recorded before it is handed out: from now on it is the only certificate of the id that
  // device RPCs accept.
  ASSIGN_OR_RETURN(DeviceCertificates::Previous previous,
                   certs_->Install(device_id, info.serial, info.not_after, now, renewing));
  // Fail closed: a certificate whose issue is not on record is never handed out.
  nlohmann::json fields = {
      {"device_id", device_id}, {"serial", info.serial}, {"not_after", info.not_after}};
  if (!renewing.empty()) fields["replaces"] = renewing;
  Status audited = audit_->Append(event, device_id, std::move(fields));
  if (!audited.ok()) {
    Status restored = certs_->Restore(device_id, previous);
    if (!restored.ok()) {
      FLEET_LOG(Error) << "device " << device_id << ": the certificate record cannot be put back ("
                       << restored.message() << "); `fleetctl device reset " << device_id
                       << "` lets it enroll again";
    }
    return Unavailable(std::string(event) + " of device '" + device_id +
                       "' not completed: the audit record cannot be written (" + audited.message() +
                       "); no certificate was issued");
  }
  FLEET_LOG(Info) << "device " << device_id << ": " << event << ", certificate " << info.serial
                  << " valid until unix " << info.not_after;
  v1::CaIssueResponse resp;
  resp.set_certificate_pem(cert);
  resp.set_serial(info.serial);
  resp.set_not_after_unix(info.not_after);
  return resp;
}

StatusOr<v1::CaIssueResponse> LocalRegistrar::Enroll(const v1::CaEnrollRequest& req) {
  const std::string& id = req.device_id();
  const std::string peer = req.peer().empty() ? "unknown" : req.peer().substr(0, 64);
  std::string reason;
  auto refuse = [&](const char* why, Status s) {
    refusals_->Refused(why, peer, Utf8Prefix(id, 128),
                       crypto::IsTokenId(req.token_id()) ? req.token_id() : "");
    return s;
  };
  if (Status valid = ValidateDeviceId(id); !valid.ok()) return refuse("bad device id", valid);
  if (Status ready = audit_->Ready(); !ready.ok()) {
    return Unavailable("enrollment is suspended: " + ready.message());
  }
  StatusOr<crypto::CsrInfo> csr = Authority::CheckCsrFor(id, req.csr_pem());
  if (!csr.ok()) {
    return refuse(csr.status().code() == StatusCode::kPermissionDenied ? "CSR names another device"
                                                                       : "bad CSR",
                  csr.status());
  }
  ASSIGN_OR_RETURN(std::string csr_der, crypto::CsrDer(req.csr_pem()));
  // The token proof before the id's certificate: without one nothing about ids is revealed.
  if (Status proof = CheckProof(req.token_id(), req.token_proof(), id, csr_der, &reason);
      !proof.ok()) {
    refusals_->Refused(reason, peer, id, crypto::IsTokenId(req.token_id()) ? req.token_id() : "");
    return proof;
  }
  if (Status may = certs_->MayEnroll(id, options_.now()); !may.ok()) {
    return refuse("device has a valid certificate", may);
  }
  RETURN_IF_ERROR(SpendToken(req.token_id(), id));
  return Issue(id, *csr, "enroll", "");
}

StatusOr<v1::CaIssueResponse> LocalRegistrar::Renew(const v1::CaRenewRequest& req) {
  const std::string& id = req.device_id();
  RETURN_IF_ERROR(ValidateDeviceId(id));
  if (Status ready = audit_->Ready(); !ready.ok()) {
    return Unavailable("renewal is suspended: " + ready.message());
  }
  // The certificate being renewed: ours, valid now, the device's, and its current one.
  const std::string& current = req.current_certificate_pem();
  if (Status chain = crypto::VerifyCertificate(current, authority_->ca_pem(), options_.now());
      !chain.ok()) {
    return Unauthenticated("renewal of '" + id + "' refused: " + chain.message());
  }
  ASSIGN_OR_RETURN(crypto::CertInfo info, crypto::ParseCertificate(current));
  if (info.role != crypto::CertRole::kDevice || info.id != id) {
    return PermissionDenied("renewal of '" + id +
                            "' refused: the certificate is not that device's");
  }
  std::optional<DeviceCertRecord> record = certs_->Get(id);
  if (!record || record->state != DeviceCertRecord::State::kCurrent ||
      record->serial != info.serial) {
    return Unauthenticated("renewal of '" + id + "' refused: certificate " + info.serial +
                           " is not the device's current certificate");
  }
  ASSIGN_OR_RETURN(crypto::CsrInfo csr, Authority::CheckCsrFor(id, req.csr_pem()));
  ASSIGN_OR_RETURN(std::string csr_der, crypto::CsrDer(req.csr_pem()));
  // Proof of possession: only the holder of the current key can ask for its successor.
  if (!crypto::VerifyWithCertificate(current, crypto::RenewalMessage(id, csr_der, info.serial),
                                     req.possession_signature())) {
    return PermissionDenied("renewal of '" + id +
                            "' refused: the request is not signed with the key of certificate " +
                            info.serial + " (no proof of possession)");
  }
  return Issue(id, csr, "renew", info.serial);
}

StatusOr<v1::ResetDeviceResponse> LocalRegistrar::ResetDevice(const std::string& id,
                                                              const std::string& by) {
  RETURN_IF_ERROR(ValidateDeviceId(id));
  // Fail closed: a reset lets the id enroll again, so it happens only on record.
  if (Status ready = audit_->Ready(); !ready.ok()) {
    return Unavailable("device '" + id + "' not reset: " + ready.message());
  }
  DeviceCertificates::Previous previous;
  RETURN_IF_ERROR(certs_->Reset(id, options_.now(), &previous));
  const std::string serial =
      previous && previous->state == DeviceCertRecord::State::kCurrent ? previous->serial : "";
  Status audited =
      audit_->Append("device_reset", by, {{"device_id", id}, {"forgotten_serial", serial}});
  if (!audited.ok()) {
    Status restored = certs_->Restore(id, previous);
    if (!restored.ok()) FLEET_LOG(Error) << "device " << id << ": " << restored.message();
    return Internal("device '" + id +
                    "' not reset: the reset cannot be recorded in the audit log (" +
                    audited.message() + ")");
  }
  v1::ResetDeviceResponse resp;
  resp.set_forgotten_serial(serial);
  return resp;
}

// ---------------------------------------------------------------- remote

namespace {

class RemoteRegistrar final : public Registrar {
 public:
  RemoteRegistrar(std::string endpoint, ClientTlsOptions tls)
      : endpoint_(std::move(endpoint)), tls_(std::move(tls)) {}

  bool remote() const override { return true; }

  StatusOr<v1::CaIssueResponse> Enroll(const v1::CaEnrollRequest& request) override {
    v1::CaIssueResponse resp;
    RETURN_IF_ERROR(Call([&](v1::CertificateAuthority::Stub* s, grpc::ClientContext* ctx) {
      return s->Enroll(ctx, request, &resp);
    }));
    return resp;
  }
  StatusOr<v1::CaIssueResponse> Renew(const v1::CaRenewRequest& request) override {
    v1::CaIssueResponse resp;
    RETURN_IF_ERROR(Call([&](v1::CertificateAuthority::Stub* s, grpc::ClientContext* ctx) {
      return s->Renew(ctx, request, &resp);
    }));
    return resp;
  }
  StatusOr<v1::ResetDeviceResponse> ResetDevice(const std::string& id,
                                                const std::string& by) override {
    v1::CaResetRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_device_id(id);
    req.set_requested_by(by);
    v1::ResetDeviceResponse resp;
    RETURN_IF_ERROR(Call([&](v1::CertificateAuthority::Stub* s, grpc::ClientContext* ctx) {
      return s->ResetDevice(ctx, req, &resp);
    }));
    return resp;
  }
  StatusOr<std::pair<std::string, v1::TokenInfo>> CreateToken(const TokenSpec&,
                                                              const std::string&) override {
    return NoTokens();
  }
  StatusOr<std::vector<v1::TokenInfo>> ListTokens() override { return NoTokens(); }
  StatusOr<v1::TokenInfo> RevokeToken(const std::string&, const std::string&) override {
    return NoTokens();
  }

 private:
  Status NoTokens() const {
    return FailedPrecondition(
        "this coordinator has a separate CA (" + endpoint_ +
        "): bootstrap tokens are made and managed there, so that the coordinator never sees "
        "one: `fleet-coordinator ca token create|list|revoke --state-dir CA_STATE_DIR --ca " +
        endpoint_ + "` on the CA's host");
  }
  template <typename F>
  Status Call(F rpc) {
    std::shared_ptr<v1::CertificateAuthority::Stub> stub;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!stub_) {
        ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                         MakeChannel(endpoint_, tls_, 1 << 20));
        stub_ = v1::CertificateAuthority::NewStub(channel);
      }
      stub = stub_;
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Status s = rpc(stub.get(), &ctx);
    if (s.ok()) return OkStatus();
    Status st = FromGrpcStatus(s);
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
        s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return Status(st.code(), "the CA at " + endpoint_ + " is unreachable: " + st.message());
    }
    return st;
  }

  const std::string endpoint_;
  const ClientTlsOptions tls_;
  std::mutex mu_;
  std::shared_ptr<v1::CertificateAuthority::Stub> stub_;  // guarded by mu_
};

}  // namespace

std::unique_ptr<Registrar> ConnectRegistrar(const std::string& endpoint,
                                            const ClientTlsOptions& tls) {
  return std::make_unique<RemoteRegistrar>(endpoint, tls);
}

}  // namespace fleet
