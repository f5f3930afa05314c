// A CA apart from the coordinator (`fleet-coordinator ca serve`): the CertificateAuthority gRPC
// service in front of a LocalRegistrar with its own state directory (ca.db, audit.log, pki/ with
// ca.key and token.key). mTLS is required at the handshake; each method then checks the caller's
// role (proto/fleet.proto, "certificate authority"): a coordinator may relay enrollments and
// renewals and reset devices, only a CA administrator manages tokens. Handlers are sync and
// short (a signature, a few fsyncs).
#pragma once

#include <chrono>
#include <string>

#include "coordinator/access.h"
#include "coordinator/registrar.h"
#include "proto/fleet.grpc.pb.h"

namespace fleet {

class CaService final : public v1::CertificateAuthority::Service {
 public:
  CaService(LocalRegistrar* registrar, AccessControl* access)
      : registrar_(registrar), access_(access) {}
  grpc::Status Enroll(grpc::ServerContext*, const v1::CaEnrollRequest*,
                      v1::CaIssueResponse*) override;
  grpc::Status Renew(grpc::ServerContext*, const v1::CaRenewRequest*,
                     v1::CaIssueResponse*) override;
  grpc::Status ResetDevice(grpc::ServerContext*, const v1::CaResetRequest*,
                           v1::ResetDeviceResponse*) override;
  grpc::Status CreateToken(grpc::ServerContext*, const v1::CreateTokenRequest*,
                           v1::CreateTokenResponse*) override;
  grpc::Status ListTokens(grpc::ServerContext*, const v1::ListTokensRequest*,
                          v1::ListTokensResponse*) override;
  grpc::Status RevokeToken(grpc::ServerContext*, const v1::RevokeTokenRequest*,
                           v1::TokenInfo*) override;

 private:
  // The caller, if its certificate has one of the roles (PERMISSION_DENIED otherwise).
  grpc::Status Allow(const grpc::ServerContext& ctx, bool coordinator, bool ca_admin,
                     std::string* who);
  LocalRegistrar* registrar_;
  AccessControl* access_;
};

struct CaServeOptions {
  std::string state_dir, listen = "127.0.0.1:7450", port_file;
  int64_t device_cert_lifetime_s = 7 * 86400;
  std::chrono::milliseconds refusal_interval{60000};
};
// `fleet-coordinator ca token create|list|revoke`, `ca device reset`: calls to a running CA
// with the CA administrator's certificate from state_dir/pki/admin.pem.
struct CaAdminCommand {
  enum class Op { kCreateToken, kListTokens, kRevokeToken, kResetDevice };
  Op op = Op::kListTokens;
  std::string state_dir, endpoint = "127.0.0.1:7450", server_name, id;
  TokenSpec spec;
  bool json = false;
};
// Exit code: 0 done, 1 refused or unreachable, 2 usage.
int RunCaAdmin(const CaAdminCommand& command);

// Serves until SIGINT/SIGTERM. Returns the process exit code (0 clean stop, 1 runtime failure,
// 2 no CA PKI in state_dir).
int RunCaServer(const CaServeOptions& options);

}  // namespace fleet
