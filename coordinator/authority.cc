#include "coordinator/authority.h"

#include <sodium.h>
#include <sys/stat.h>

#include "common/audit_log.h"
#include "common/file_util.h"

namespace fleet {
namespace {

StatusOr<std::unique_ptr<crypto::SigningKey>> LoadModelKey(const std::string& path) {
  ASSIGN_OR_RETURN(std::string hex, ReadFile(path));
  crypto::Secret32 seed;
  if (!crypto::FromHex(std::move(hex), seed.data(), seed.size())) {
    return InvalidArgument(path + ": not a 64-hex-digit Ed25519 seed");
  }
  return std::make_unique<crypto::SigningKey>(crypto::SigningKey::FromSeed(seed));
}

}  // namespace

PkiPaths::PkiPaths(const std::string& state_dir)
    : dir(state_dir + "/pki"),
      ca_cert(dir + "/ca.pem"),
      ca_key(dir + "/ca.key"),
      server_cert(dir + "/server.pem"),
      server_key(dir + "/server.key"),
      admin_cert(dir + "/admin.pem"),
      admin_key(dir + "/admin.key"),
      model_key(dir + "/model-signing.key"),
      audit_key(dir + "/audit.key"),
      token_key(dir + "/token.key"),
      ca_client_cert(dir + "/ca-client.pem"),
      ca_client_key(dir + "/ca-client.key") {}

namespace {

// Makes a key and a certificate for `req` signed by the CA, written 0600.
Status IssueFile(const std::string& ca, const std::string& ca_key, crypto::CertRequest req,
                 const std::string& cert_path, const std::string& key_path) {
  ASSIGN_OR_RETURN(std::string key, crypto::GenerateP256Key());
  ASSIGN_OR_RETURN(req.public_key_pem, crypto::PublicKeyOf(key));
  Status s = [&]() -> Status {
    ASSIGN_OR_RETURN(std::string cert, crypto::IssueCertificate(ca, ca_key, req));
    RETURN_IF_ERROR(WriteFileAtomically(key_path, key, 0600));
    return WriteFileAtomically(cert_path, cert, 0600);
  }();
  sodium_memzero(key.data(), key.size());
  return s;
}

crypto::CertRequest ServerRequest(const std::vector<std::string>& dns,
                                  const std::vector<std::string>& ips, const std::string& fallback,
                                  int64_t now, int64_t lifetime_s) {
  crypto::CertRequest server;
  server.common_name = dns.empty() ? fallback : dns.front();
  server.dns_names = dns;
  server.ip_addresses = ips;
  server.not_before = now - kCertBackdateS;
  server.not_after = now + lifetime_s;
  return server;
}

crypto::CertRequest ClientRequest(crypto::CertRole role, const std::string& name, int64_t now,
                                  int64_t lifetime_s) {
  crypto::CertRequest req;
  req.common_name = name;
  req.role = role;
  req.not_before = now - kCertBackdateS;
  req.not_after = now + lifetime_s;
  return req;
}

Status WriteModelKey(const std::string& path) {
  crypto::Secret32 seed;
  randombytes_buf(seed.data(), seed.size());
  std::string hex = crypto::ToHex(seed.data(), seed.size()) + "\n";
  Status s = WriteFileAtomically(path, hex, 0600);
  sodium_memzero(hex.data(), hex.size());
  return s;
}

Status RefuseExisting(const std::string& path, const std::string& what) {
  return Status(StatusCode::kAlreadyExists, path + " already exists: refusing to overwrite " +
                                                what + ". Use a new --state-dir for a new fleet.");
}

}  // namespace

Status InitPki(const std::string& state_dir, const InitOptions& o, int64_t now) {
  PkiPaths p(state_dir);
  if (FileExists(p.ca_key)) {
    return RefuseExisting(p.ca_key, "the fleet CA (every enrolled device trusts it)");
  }
  RETURN_IF_ERROR(MakePrivateDir(state_dir));
  RETURN_IF_ERROR(MakePrivateDir(p.dir));
  ASSIGN_OR_RETURN(std::string ca_key, crypto::GenerateP256Key());
  ASSIGN_OR_RETURN(
      std::string ca,
      crypto::MakeCaCertificate(ca_key, "fleetfl CA", now - kCertBackdateS, now + o.ca_lifetime_s));
  RETURN_IF_ERROR(IssueFile(
      ca, ca_key,
      ServerRequest(o.dns_names, o.ip_addresses, "fleet-coordinator", now, o.server_lifetime_s),
      p.server_cert, p.server_key));
  RETURN_IF_ERROR(IssueFile(
      ca, ca_key, ClientRequest(crypto::CertRole::kAdmin, o.admin_name, now, o.admin_lifetime_s),
      p.admin_cert, p.admin_key));
  RETURN_IF_ERROR(WriteModelKey(p.model_key));
  if (!FileExists(p.audit_key)) RETURN_IF_ERROR(CreateAuditKey(p.audit_key));
  // The same 32-random-byte key file format.
  if (!FileExists(p.token_key)) RETURN_IF_ERROR(CreateAuditKey(p.token_key));
  RETURN_IF_ERROR(WriteFileAtomically(p.ca_cert, ca, 0600));
  // The CA key last: its presence marks a complete init.
  Status s = WriteFileAtomically(p.ca_key, ca_key, 0600);
  sodium_memzero(ca_key.data(), ca_key.size());
  return s;
}

Status InitSeparateCa(const std::string& ca_dir, const std::string& coordinator_dir,
                      const SeparateCaOptions& o, int64_t now) {
  PkiPaths ca_p(ca_dir), co_p(coordinator_dir);
  if (FileExists(ca_p.ca_key)) {
    return RefuseExisting(ca_p.ca_key, "the fleet CA (every enrolled device trusts it)");
  }
  if (FileExists(co_p.ca_cert)) {
    return RefuseExisting(co_p.ca_cert, "the coordinator's PKI (it belongs to another fleet)");
  }
  for (const std::string& d : {ca_dir, ca_p.dir, coordinator_dir, co_p.dir}) {
    RETURN_IF_ERROR(MakePrivateDir(d));
  }
  ASSIGN_OR_RETURN(std::string ca_key, crypto::GenerateP256Key());
  ASSIGN_OR_RETURN(std::string ca,
                   crypto::MakeCaCertificate(ca_key, "fleetfl CA", now - kCertBackdateS,
                                             now + o.ca.ca_lifetime_s));
  Status s = [&]() -> Status {
    // The CA's own: its listener's certificate, its administrators', the token and audit keys.
    RETURN_IF_ERROR(IssueFile(
        ca, ca_key,
        ServerRequest(o.ca.dns_names, o.ca.ip_addresses, "fleet-ca", now, o.ca.server_lifetime_s),
        ca_p.server_cert, ca_p.server_key));
    RETURN_IF_ERROR(IssueFile(
        ca, ca_key,
        ClientRequest(crypto::CertRole::kCaAdmin, o.ca_admin_name, now, o.ca.admin_lifetime_s),
        ca_p.admin_cert, ca_p.admin_key));
    if (!FileExists(ca_p.audit_key)) RETURN_IF_ERROR(CreateAuditKey(ca_p.audit_key));
    if (!FileExists(ca_p.token_key)) RETURN_IF_ERROR(CreateAuditKey(ca_p.token_key));
    // The coordinator's: no CA key, but everything else `init` makes, and its client identity
    // towards the CA.
    RETURN_IF_ERROR(IssueFile(ca, ca_key,
                              ServerRequest(o.coordinator_dns_names, o.coordinator_ip_addresses,
                                            "fleet-coordinator", now, o.ca.server_lifetime_s),
                              co_p.server_cert, co_p.server_key));
    RETURN_IF_ERROR(IssueFile(
        ca, ca_key,
        ClientRequest(crypto::CertRole::kAdmin, o.ca.admin_name, now, o.ca.admin_lifetime_s),
        co_p.admin_cert, co_p.admin_key));
    RETURN_IF_ERROR(IssueFile(ca, ca_key,
                              ClientRequest(crypto::CertRole::kCoordinator, o.coordinator_name, now,
                                            o.ca.server_lifetime_s),
                              co_p.ca_client_cert, co_p.ca_client_key));
    RETURN_IF_ERROR(WriteModelKey(co_p.model_key));
    if (!FileExists(co_p.audit_key)) RETURN_IF_ERROR(CreateAuditKey(co_p.audit_key));
    RETURN_IF_ERROR(WriteFileAtomically(co_p.ca_cert, ca, 0600));
    RETURN_IF_ERROR(WriteFileAtomically(ca_p.ca_cert, ca, 0600));
    // The CA key last: its presence marks a complete init.
    return WriteFileAtomically(ca_p.ca_key, ca_key, 0600);
  }();
  sodium_memzero(ca_key.data(), ca_key.size());
  return s;
}

StatusOr<std::unique_ptr<Authority>> Authority::Load(const std::string& state_dir, bool ca_key,
                                                     bool model_key) {
  PkiPaths p(state_dir);
  std::unique_ptr<Authority> a(new Authority());
  ASSIGN_OR_RETURN(a->ca_pem_, ReadFile(p.ca_cert));
  if (ca_key) {
    ASSIGN_OR_RETURN(a->ca_key_pem_, ReadFile(p.ca_key));
    if (!crypto::KeyMatchesCertificate(a->ca_key_pem_, a->ca_pem_)) {
      return InvalidArgument(p.ca_key + " is not the key of " + p.ca_cert);
    }
  }
  if (model_key) {
    ASSIGN_OR_RETURN(a->model_key_, LoadModelKey(p.model_key));
  }
  return a;
}

StatusOr<crypto::CsrInfo> Authority::CheckCsrFor(const std::string& device_id,
                                                 const std::string& csr_pem) {
  StatusOr<crypto::CsrInfo> csr = crypto::ParseCsr(csr_pem);
  if (!csr.ok()) return InvalidArgument("bad CSR: " + csr.status().message());
  if (csr->common_name != device_id) {
    return PermissionDenied("CSR names device '" + csr->common_name + "' but the request is for '" +
                            device_id + "'");
  }
  if (Status key = CheckDeviceCsr(*csr); !key.ok()) {
    return InvalidArgument("bad CSR: " + key.message());
  }
  return csr;
}

Authority::~Authority() { sodium_memzero(ca_key_pem_.data(), ca_key_pem_.size()); }

Status Authority::CheckDeviceCsr(const crypto::CsrInfo& csr) {
  // Every client since certified SecAgg keys asks for one; a certificate without it could never
  // take part in a secure round, so refusing says so at enrollment instead of at every round.
  if (csr.secagg_public_key.empty()) {
    return InvalidArgument(
        "device CSR requests no secure-aggregation signing key (X.509 "
        "extension " +
        std::string(crypto::kSecAggKeyOid) +
        "): this client software predates certified SecAgg keys; upgrade it");
  }
  if (csr.secagg_public_key.size() != crypto::kSecAggKeyBytes ||
      crypto_core_ed25519_is_valid_point(
          reinterpret_cast<const unsigned char*>(csr.secagg_public_key.data())) != 1) {
    return InvalidArgument(
        "device CSR's secure-aggregation signing key is not a valid Ed25519 "
        "public key (canonical, not of small order)");
  }
  return OkStatus();
}

StatusOr<std::string> Authority::IssueDeviceCertificate(const crypto::CsrInfo& csr,
                                                        const std::string& device_id,
                                                        int64_t now, int64_t lifetime_s) const {
  if (!can_issue()) return FailedPrecondition("this process does not hold the CA key");
  RETURN_IF_ERROR(CheckDeviceCsr(csr));
  crypto::CertRequest req;
  req.public_key_pem = csr.public_key_pem;
  req.common_name = device_id;
  req.role = crypto::CertRole::kDevice;
  req.not_before = now - kCertBackdateS;
  req.not_after = now + lifetime_s;
  req.secagg_public_key = csr.secagg_public_key;
  return crypto::IssueCertificate(ca_pem_, ca_key_pem_, req);
}

}  // namespace fleet
