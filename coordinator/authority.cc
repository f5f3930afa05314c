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
      token_key(dir + "/token.key") {}

Status InitPki(const std::string& state_dir, const InitOptions& o, int64_t now) {
  PkiPaths p(state_dir);
  if (FileExists(p.ca_key)) {
    return Status(StatusCode::kAlreadyExists,
                  p.ca_key + " already exists: refusing to overwrite the fleet CA (every "
                             "enrolled device trusts it). Use a new --state-dir for a new fleet.");
  }
  RETURN_IF_ERROR(MakePrivateDir(state_dir));
  RETURN_IF_ERROR(MakePrivateDir(p.dir));
  ASSIGN_OR_RETURN(std::string ca_key, crypto::GenerateP256Key());
  ASSIGN_OR_RETURN(std::string ca, crypto::MakeCaCertificate(ca_key, "fleetfl CA", now - kCertBackdateS,
                                                             now + o.ca_lifetime_s));
  auto issue = [&](crypto::CertRequest req, const std::string& cert_path,
                   const std::string& key_path) -> Status {
    ASSIGN_OR_RETURN(std::string key, crypto::GenerateP256Key());
    ASSIGN_OR_RETURN(req.public_key_pem, crypto::PublicKeyOf(key));
    ASSIGN_OR_RETURN(std::string cert, crypto::IssueCertificate(ca, ca_key, req));
    RETURN_IF_ERROR(WriteFileAtomically(key_path, key, 0600));
    return WriteFileAtomically(cert_path, cert, 0600);
  };
  crypto::CertRequest server;
  server.common_name = o.dns_names.empty() ? "fleet-coordinator" : o.dns_names.front();
  server.dns_names = o.dns_names;
  server.ip_addresses = o.ip_addresses;
  server.not_before = now - kCertBackdateS;
  server.not_after = now + o.server_lifetime_s;
  RETURN_IF_ERROR(issue(server, p.server_cert, p.server_key));
  crypto::CertRequest admin;
  admin.common_name = o.admin_name;
  admin.role = crypto::CertRole::kAdmin;
  admin.not_before = now - kCertBackdateS;
  admin.not_after = now + o.admin_lifetime_s;
  RETURN_IF_ERROR(issue(admin, p.admin_cert, p.admin_key));
  crypto::Secret32 seed;
  randombytes_buf(seed.data(), seed.size());
  std::string hex = crypto::ToHex(seed.data(), seed.size()) + "\n";
  Status s = WriteFileAtomically(p.model_key, hex, 0600);
  sodium_memzero(hex.data(), hex.size());
  RETURN_IF_ERROR(s);
  if (!FileExists(p.audit_key)) RETURN_IF_ERROR(CreateAuditKey(p.audit_key));
  // The same 32-random-byte key file format.
  if (!FileExists(p.token_key)) RETURN_IF_ERROR(CreateAuditKey(p.token_key));
  RETURN_IF_ERROR(WriteFileAtomically(p.ca_cert, ca, 0600));
  // The CA key last: its presence marks a complete init.
  return WriteFileAtomically(p.ca_key, ca_key, 0600);
}

StatusOr<std::unique_ptr<Authority>> Authority::Load(const std::string& state_dir) {
  PkiPaths p(state_dir);
  std::unique_ptr<Authority> a(new Authority());
  ASSIGN_OR_RETURN(a->ca_pem_, ReadFile(p.ca_cert));
  ASSIGN_OR_RETURN(a->ca_key_pem_, ReadFile(p.ca_key));
  if (!crypto::KeyMatchesCertificate(a->ca_key_pem_, a->ca_pem_)) {
    return InvalidArgument(p.ca_key + " is not the key of " + p.ca_cert);
  }
  ASSIGN_OR_RETURN(a->model_key_, LoadModelKey(p.model_key));
  return a;
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
