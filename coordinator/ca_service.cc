#include "coordinator/ca_service.h"

#include "common/log.h"
#include "common/utf8.h"

namespace fleet {
namespace {

grpc::Status CheckVersion(uint32_t v) {
  if (v == kProtocolVersion) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                      "protocol version mismatch: the coordinator speaks v" + std::to_string(v) +
                          ", the CA speaks v" + std::to_string(kProtocolVersion));
}

template <typename T>
grpc::Status Reply(StatusOr<T> r, T* out) {
  if (!r.ok()) return ToGrpcStatus(r.status());
  *out = std::move(r).value();
  return grpc::Status::OK;
}

}  // namespace

grpc::Status CaService::Allow(const grpc::ServerContext& ctx, bool coordinator, bool ca_admin,
                              std::string* who) {
  StatusOr<Peer> peer = access_->Authenticate(ctx);
  Status s = peer.status();
  if (s.ok()) {
    const bool ok = (coordinator && peer->role == crypto::CertRole::kCoordinator) ||
                    (ca_admin && peer->role == crypto::CertRole::kCaAdmin);
    if (ok) {
      *who =
          (peer->role == crypto::CertRole::kCoordinator ? "coordinator/" : "ca-admin/") + peer->id;
      return grpc::Status::OK;
    }
    s = PermissionDenied(std::string("this CA method is for ") +
                         (coordinator && ca_admin ? "coordinators and CA administrators"
                          : coordinator           ? "coordinators"
                                                  : "CA administrators (fleetfl://ca-admin/)") +
                         "; the caller's certificate is not one");
  }
  FLEET_LOG(Warn) << "refused CA call from " << ctx.peer() << ": " << s.message();
  return ToGrpcStatus(s);
}

grpc::Status CaService::Enroll(grpc::ServerContext* ctx, const v1::CaEnrollRequest* req,
                               v1::CaIssueResponse* resp) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, true, false, &who); !a.ok()) return a;
  if (grpc::Status v = CheckVersion(req->protocol_version()); !v.ok()) return v;
  StatusOr<v1::CaIssueResponse> r = registrar_->Enroll(*req);
  if (!r.ok()) {
    FLEET_LOG(Warn) << "refused enrollment of '" << Utf8Prefix(req->device_id(), 128)
                    << "' relayed by " << who << ": " << r.status().message();
  }
  return Reply(std::move(r), resp);
}

grpc::Status CaService::Renew(grpc::ServerContext* ctx, const v1::CaRenewRequest* req,
                              v1::CaIssueResponse* resp) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, true, false, &who); !a.ok()) return a;
  if (grpc::Status v = CheckVersion(req->protocol_version()); !v.ok()) return v;
  StatusOr<v1::CaIssueResponse> r = registrar_->Renew(*req);
  if (!r.ok()) {
    FLEET_LOG(Warn) << "refused renewal of '" << Utf8Prefix(req->device_id(), 128)
                    << "' relayed by " << who << ": " << r.status().message();
  }
  return Reply(std::move(r), resp);
}

grpc::Status CaService::ResetDevice(grpc::ServerContext* ctx, const v1::CaResetRequest* req,
                                    v1::ResetDeviceResponse* resp) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, true, true, &who); !a.ok()) return a;
  if (grpc::Status v = CheckVersion(req->protocol_version()); !v.ok()) return v;
  const std::string by =
      req->requested_by().empty() ? who : who + " for " + Utf8Prefix(req->requested_by(), 128);
  return Reply(registrar_->ResetDevice(req->device_id(), by), resp);
}

grpc::Status CaService::CreateToken(grpc::ServerContext* ctx, const v1::CreateTokenRequest* req,
                                    v1::CreateTokenResponse* resp) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, false, true, &who); !a.ok()) return a;
  auto r = registrar_->CreateToken(TokenSpecOf(*req), who);
  if (!r.ok()) return ToGrpcStatus(r.status());
  resp->set_token(r->first);
  *resp->mutable_info() = r->second;
  return grpc::Status::OK;
}

grpc::Status CaService::ListTokens(grpc::ServerContext* ctx, const v1::ListTokensRequest*,
                                   v1::ListTokensResponse* resp) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, false, true, &who); !a.ok()) return a;
  StatusOr<std::vector<v1::TokenInfo>> tokens = registrar_->ListTokens();
  if (!tokens.ok()) return ToGrpcStatus(tokens.status());
  for (auto& t : *tokens) *resp->add_tokens() = std::move(t);
  return grpc::Status::OK;
}

grpc::Status CaService::RevokeToken(grpc::ServerContext* ctx, const v1::RevokeTokenRequest* req,
                                    v1::TokenInfo* resp) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, false, true, &who); !a.ok()) return a;
  return Reply(registrar_->RevokeToken(req->id(), who), resp);
}

}  // namespace fleet
