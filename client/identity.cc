#include "client/identity.h"

#include "common/config.h"
#include "common/file_util.h"
#include "common/grpc_util.h"
#include "common/log.h"

namespace fleet {
namespace {

struct Files {
  explicit Files(const std::string& dir)
      : key(dir + "/device.key"),
        cert(dir + "/device.pem"),
        ca(dir + "/ca.pem"),
        model_key(dir + "/model-signing.pub") {}
  std::string key, cert, ca, model_key;
};

// Checks a freshly received or loaded certificate and completes `c`.
Status Check(DeviceCredentials* c, const std::string& device_id, int64_t now) {
  RETURN_IF_ERROR(crypto::VerifyCertificate(c->cert_pem, c->ca_pem, now));
  ASSIGN_OR_RETURN(c->cert, crypto::ParseCertificate(c->cert_pem));
  if (c->cert.role != crypto::CertRole::kDevice || c->cert.id != device_id) {
    return InvalidArgument("certificate names '" + c->cert.id + "', not device '" + device_id +
                           "'");
  }
  if (!crypto::KeyMatchesCertificate(c->key_pem, c->cert_pem)) {
    return InvalidArgument("certificate does not match the device key");
  }
  return OkStatus();
}

Status Store(const ClientConfig& config, const DeviceCredentials& c) {
  Files f(config.state_dir);
  RETURN_IF_ERROR(MakePrivateDir(config.state_dir));
  RETURN_IF_ERROR(WriteFileAtomically(f.ca, c.ca_pem, 0600));
  RETURN_IF_ERROR(WriteFileAtomically(
      f.model_key, crypto::ToHex(c.model_key.data(), c.model_key.size()) + "\n", 0600));
  RETURN_IF_ERROR(WriteFileAtomically(f.key, c.key_pem, 0600));
  return WriteFileAtomically(f.cert, c.cert_pem, 0600);
}

// A new key and a CSR for it.
StatusOr<std::pair<std::string, std::string>> KeyAndCsr(const std::string& device_id) {
  ASSIGN_OR_RETURN(std::string key, crypto::GenerateP256Key());
  ASSIGN_OR_RETURN(std::string csr, crypto::MakeCsr(key, device_id));
  return std::make_pair(std::move(key), std::move(csr));
}

StatusOr<DeviceCredentials> Accept(const ClientConfig& config, std::string key_pem,
                                   std::string ca_pem, const v1::EnrollResponse& resp,
                                   int64_t now) {
  DeviceCredentials c;
  c.key_pem = std::move(key_pem);
  c.ca_pem = std::move(ca_pem);  // the pinned one, not whatever the response says
  c.cert_pem = resp.certificate_pem();
  if (resp.model_signing_public_key().size() != c.model_key.size()) {
    return InvalidArgument("enrollment response has no model-signing key");
  }
  crypto::FromString(resp.model_signing_public_key(), &c.model_key);
  Status s = Check(&c, config.device_id, now);
  if (!s.ok()) return Status(s.code(), "coordinator returned an unusable certificate: " + s.message());
  RETURN_IF_ERROR(Store(config, c));
  return c;
}

}  // namespace

ClientTlsOptions DeviceCredentials::Tls(const std::string& server_name) const {
  ClientTlsOptions t;
  t.ca_pem = ca_pem;
  t.cert_pem = cert_pem;
  t.key_pem = key_pem;
  t.server_name = server_name;
  return t;
}

StatusOr<Bootstrap> LoadBootstrap(const std::string& path) {
  ASSIGN_OR_RETURN(YAML::Node root, LoadYamlFile(path));
  ASSIGN_OR_RETURN(ConfigMap m, ConfigMap::Create(root, path));
  Bootstrap b;
  std::string ca_file;
  RETURN_IF_ERROR(m.Require("coordinator", &b.coordinator));
  RETURN_IF_ERROR(m.Get("ca_cert", &b.ca_pem));
  RETURN_IF_ERROR(m.Get("ca_cert_file", &ca_file));
  RETURN_IF_ERROR(m.Get("token", &b.token));
  RETURN_IF_ERROR(m.Get("server_name", &b.server_name));
  RETURN_IF_ERROR(m.Finish());
  if (b.ca_pem.empty() == ca_file.empty()) {
    return InvalidArgument(path + ": give exactly one of ca_cert (PEM) or ca_cert_file");
  }
  if (!ca_file.empty()) {
    if (ca_file[0] != '/' && path.find('/') != std::string::npos) {
      ca_file = path.substr(0, path.rfind('/')) + "/" + ca_file;
    }
    ASSIGN_OR_RETURN(b.ca_pem, ReadFile(ca_file));
  }
  if (!crypto::ParseCertificate(b.ca_pem).ok()) {
    return InvalidArgument(path + ": the pinned CA is not a PEM certificate");
  }
  return b;
}

int64_t RenewalTime(const crypto::CertInfo& cert) {
  const int64_t issued = cert.not_before + crypto::kCertBackdateS;
  return issued + (cert.not_after - issued) * 2 / 3;
}

StatusOr<DeviceCredentials> LoadCredentials(const std::string& state_dir,
                                            const std::string& device_id, int64_t now) {
  Files f(state_dir);
  if (!FileExists(f.cert) || !FileExists(f.key)) {
    return NotFound("no device certificate in " + state_dir);
  }
  DeviceCredentials c;
  ASSIGN_OR_RETURN(c.key_pem, ReadFile(f.key));
  ASSIGN_OR_RETURN(c.cert_pem, ReadFile(f.cert));
  ASSIGN_OR_RETURN(c.ca_pem, ReadFile(f.ca));
  ASSIGN_OR_RETURN(std::string hex, ReadFile(f.model_key));
  if (!crypto::FromHex(std::move(hex), c.model_key.data(), c.model_key.size())) {
    return InvalidArgument(f.model_key + ": not a 64-hex-digit Ed25519 public key");
  }
  Status s = Check(&c, device_id, now);
  if (!s.ok()) return Status(s.code(), f.cert + ": " + s.message());
  return c;
}

StatusOr<DeviceCredentials> EnrollDevice(const ClientConfig& config, const Bootstrap& b,
                                         int64_t now) {
  if (b.token.empty()) {
    return FailedPrecondition("no bootstrap token to enroll with: add `token:` from `fleetctl "
                              "token create` to the bootstrap file");
  }
  ASSIGN_OR_RETURN(auto key_csr, KeyAndCsr(config.device_id));
  ClientTlsOptions tls;
  tls.ca_pem = b.ca_pem;
  tls.server_name = b.server_name;
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, MakeChannel(b.coordinator, tls, 1 << 20));
  auto stub = v1::Enrollment::NewStub(channel);
  v1::EnrollRequest req;
  req.set_protocol_version(kProtocolVersion);
  req.set_device_id(config.device_id);
  req.set_token(b.token);
  req.set_csr_pem(key_csr.second);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::EnrollResponse resp;
  grpc::Status s = stub->Enroll(&ctx, req, &resp);
  if (!s.ok()) return FromGrpcStatus(s);
  return Accept(config, std::move(key_csr.first), b.ca_pem, resp, now);
}

StatusOr<DeviceCredentials> RenewCertificate(v1::Device::Stub* stub, const ClientConfig& config,
                                             const DeviceCredentials& current, int64_t now) {
  ASSIGN_OR_RETURN(auto key_csr, KeyAndCsr(config.device_id));
  v1::RenewRequest req;
  req.set_protocol_version(kProtocolVersion);
  req.set_device_id(config.device_id);
  req.set_csr_pem(key_csr.second);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::EnrollResponse resp;
  grpc::Status s = stub->Renew(&ctx, req, &resp);
  if (!s.ok()) return FromGrpcStatus(s);
  return Accept(config, std::move(key_csr.first), current.ca_pem, resp, now);
}

}  // namespace fleet
