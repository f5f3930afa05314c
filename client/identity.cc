#include "client/identity.h"

#include <fcntl.h>
#include <sodium.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/config.h"
#include "common/file_util.h"
#include "common/grpc_util.h"
#include "common/log.h"
#include "crypto/enroll_token.h"

namespace fleet {
namespace {

struct Files {
  explicit Files(const std::string& dir)
      : key(dir + "/device.key"),
        cert(dir + "/device.pem"),
        ca(dir + "/ca.pem"),
        model_key(dir + "/model-signing.pub"),
        secagg_key(dir + "/secagg-signing.key"),
        secagg_pending(secagg_key + ".pending") {}
  std::string key, cert, ca, model_key, secagg_key, secagg_pending;
};

// A new P-256 key, a new Ed25519 SecAgg seed, and a CSR that asks the CA to certify both.
struct NewKeys {
  std::string key_pem, csr;
  crypto::Secret32 secagg_seed;
  ~NewKeys() { sodium_memzero(key_pem.data(), key_pem.size()); }
};

// Reads from `fd` into buf until end of file or `cap` bytes (a full buffer means the file may be
// longer), then closes it. Returns the bytes read.
size_t ReadAndClose(int fd, char* buf, size_t cap) {
  size_t n = 0;
  while (n < cap) {
    const ssize_t r = ::read(fd, buf + n, cap - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += static_cast<size_t>(r);
  }
  ::close(fd);
  return n;
}

// The Ed25519 key in a seed file; NotFound when there is none. Read straight into one buffer
// (not through stream buffers) so that every copy of the seed is wiped.
StatusOr<crypto::SigningKey> LoadSecAggKey(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return NotFound("cannot open " + path + ": " + std::strerror(errno));
  char buf[2 * crypto::Secret32::size() + 3];  // hex, a line end, one byte to see overlength
  const size_t n = ReadAndClose(fd, buf, sizeof buf);
  crypto::Secret32 seed;
  const bool ok = crypto::FromHex(std::string(buf, n), seed.data(), seed.size());  // wipes it
  sodium_memzero(buf, sizeof buf);
  if (!ok) return InvalidArgument(path + ": not a 64-hex-digit Ed25519 seed");
  return crypto::SigningKey::FromSeed(seed);
}

// A token file: one read() into a buffer that is wiped, surrounding whitespace dropped.
StatusOr<std::string> LoadTokenFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return NotFound("cannot open token file " + path + ": " + std::strerror(errno));
  char buf[512];  // a token is 88 characters; more than this is not a token file
  const size_t n = ReadAndClose(fd, buf, sizeof buf);
  size_t begin = 0, end = n;
  auto space = [](char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; };
  while (begin < end && space(buf[begin])) ++begin;
  while (end > begin && space(buf[end - 1])) --end;
  const bool too_long = n == sizeof buf;
  std::string token(buf + begin, too_long ? 0 : end - begin);
  sodium_memzero(buf, sizeof buf);
  if (too_long || token.empty()) {
    return InvalidArgument("token file " + path + " does not hold one bootstrap token");
  }
  return token;
}

Status WriteSecAggSeed(const std::string& path, const crypto::Secret32& seed) {
  std::string hex = crypto::ToHex(seed.data(), seed.size()) + "\n";
  Status s = WriteFileAtomically(path, hex, 0600);
  sodium_memzero(hex.data(), hex.size());
  return s;
}

// The stored SecAgg key `c->cert` certifies, into c->secagg_key; or why there is none.
void AttachSecAggKey(const Files& f, DeviceCredentials* c) {
  const std::string& certified = c->cert.secagg_public_key;
  if (certified.empty()) {
    c->secagg_missing = "certificate " + c->cert.serial +
                        " predates certified secure-aggregation keys (it certifies none)";
    return;
  }
  // A store interrupted after the certificate was written leaves its seed pending.
  StatusOr<crypto::SigningKey> pending = LoadSecAggKey(f.secagg_pending);
  if (pending.ok() && crypto::ToString(pending->public_key()) == certified) {
    if (std::rename(f.secagg_pending.c_str(), f.secagg_key.c_str()) == 0) {
      c->secagg_key = std::make_shared<const crypto::SigningKey>(std::move(pending).value());
      return;
    }
  }
  StatusOr<crypto::SigningKey> stored = LoadSecAggKey(f.secagg_key);
  if (!stored.ok()) {
    c->secagg_missing = stored.status().message();
    return;
  }
  if (crypto::ToString(stored->public_key()) != certified) {
    c->secagg_missing =
        f.secagg_key + " is not the key certificate " + c->cert.serial + " certifies";
    return;
  }
  c->secagg_key = std::make_shared<const crypto::SigningKey>(std::move(stored).value());
}

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

// The SecAgg seed goes to its pending name first and becomes current only once the certificate
// that certifies it is on disk; a crash in between leaves the old pair or a pending seed that
// AttachSecAggKey adopts.
Status Store(const ClientConfig& config, const DeviceCredentials& c,
             const crypto::Secret32& secagg_seed) {
  Files f(config.state_dir);
  RETURN_IF_ERROR(MakePrivateDir(config.state_dir));
  RETURN_IF_ERROR(WriteFileAtomically(f.ca, c.ca_pem, 0600));
  RETURN_IF_ERROR(WriteFileAtomically(
      f.model_key, crypto::ToHex(c.model_key.data(), c.model_key.size()) + "\n", 0600));
  RETURN_IF_ERROR(WriteSecAggSeed(f.secagg_pending, secagg_seed));
  RETURN_IF_ERROR(WriteFileAtomically(f.key, c.key_pem, 0600));
  RETURN_IF_ERROR(WriteFileAtomically(f.cert, c.cert_pem, 0600));
  if (std::rename(f.secagg_pending.c_str(), f.secagg_key.c_str()) != 0) {
    return Internal("cannot rename " + f.secagg_pending + " onto " + f.secagg_key);
  }
  return OkStatus();
}

// New keys and a CSR for them.
StatusOr<std::unique_ptr<NewKeys>> KeysAndCsr(const std::string& device_id) {
  auto k = std::make_unique<NewKeys>();
  ASSIGN_OR_RETURN(k->key_pem, crypto::GenerateP256Key());
  randombytes_buf(k->secagg_seed.data(), k->secagg_seed.size());
  const crypto::SigningKey secagg = crypto::SigningKey::FromSeed(k->secagg_seed);
  ASSIGN_OR_RETURN(k->csr,
                   crypto::MakeCsr(k->key_pem, device_id, crypto::ToString(secagg.public_key())));
  return k;
}

StatusOr<DeviceCredentials> Accept(const ClientConfig& config, const NewKeys& keys,
                                   std::string ca_pem, const v1::EnrollResponse& resp,
                                   int64_t now) {
  DeviceCredentials c;
  c.key_pem = keys.key_pem;
  c.secagg_key =
      std::make_shared<const crypto::SigningKey>(crypto::SigningKey::FromSeed(keys.secagg_seed));
  c.ca_pem = std::move(ca_pem);  // the pinned one, not whatever the response says
  c.cert_pem = resp.certificate_pem();
  if (resp.model_signing_public_key().size() != c.model_key.size()) {
    return InvalidArgument("enrollment response has no model-signing key");
  }
  crypto::FromString(resp.model_signing_public_key(), &c.model_key);
  Status s = Check(&c, config.device_id, now);
  if (s.ok() && c.cert.secagg_public_key != crypto::ToString(c.secagg_key->public_key())) {
    s = InvalidArgument(
        "certificate does not certify the secure-aggregation key this device "
        "asked for");
  }
  if (!s.ok()) return Status(s.code(), "coordinator returned an unusable certificate: " + s.message());
  RETURN_IF_ERROR(Store(config, c, keys.secagg_seed));
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

Bootstrap::~Bootstrap() { sodium_memzero(token.data(), token.size()); }

StatusOr<Bootstrap> LoadBootstrap(const std::string& path) {
  ASSIGN_OR_RETURN(YAML::Node root, LoadYamlFile(path));
  ASSIGN_OR_RETURN(ConfigMap m, ConfigMap::Create(root, path));
  Bootstrap b;
  std::string ca_file, token_file;
  RETURN_IF_ERROR(m.Require("coordinator", &b.coordinator));
  RETURN_IF_ERROR(m.Get("ca_cert", &b.ca_pem));
  RETURN_IF_ERROR(m.Get("ca_cert_file", &ca_file));
  RETURN_IF_ERROR(m.Get("token", &b.token));
  RETURN_IF_ERROR(m.Get("token_file", &token_file));
  RETURN_IF_ERROR(m.Get("server_name", &b.server_name));
  RETURN_IF_ERROR(m.Finish());
  if (b.ca_pem.empty() == ca_file.empty()) {
    return InvalidArgument(path + ": give exactly one of ca_cert (PEM) or ca_cert_file");
  }
  if (!b.token.empty() && !token_file.empty()) {
    return InvalidArgument(path + ": give at most one of token and token_file");
  }
  auto beside = [&](std::string file) {
    if (file[0] != '/' && path.find('/') != std::string::npos) {
      file = path.substr(0, path.rfind('/')) + "/" + file;
    }
    return file;
  };
  if (!ca_file.empty()) {
    ASSIGN_OR_RETURN(b.ca_pem, ReadFile(beside(ca_file)));
  }
  if (!token_file.empty()) {
    ASSIGN_OR_RETURN(b.token, LoadTokenFile(beside(token_file)));
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
  AttachSecAggKey(f, &c);
  return c;
}

StatusOr<DeviceCredentials> EnrollDevice(const ClientConfig& config, const Bootstrap& b,
                                         int64_t now, std::chrono::milliseconds* retry_after) {
  if (b.token.empty()) {
    return FailedPrecondition("no bootstrap token to enroll with: add `token:` from `fleetctl "
                              "token create` to the bootstrap file");
  }
  // The token's secret stays here: the request carries its id and a proof for this id and CSR.
  StatusOr<crypto::ParsedToken> token = crypto::ParseToken(b.token);
  if (!token.ok()) return InvalidArgument("bootstrap token: " + token.status().message());
  ASSIGN_OR_RETURN(std::unique_ptr<NewKeys> keys, KeysAndCsr(config.device_id));
  ASSIGN_OR_RETURN(std::string csr_der, crypto::CsrDer(keys->csr));
  ClientTlsOptions tls;
  tls.ca_pem = b.ca_pem;
  tls.server_name = b.server_name;
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, MakeChannel(b.coordinator, tls, 1 << 20));
  auto stub = v1::Enrollment::NewStub(channel);
  v1::EnrollRequest req;
  req.set_protocol_version(kProtocolVersion);
  req.set_device_id(config.device_id);
  req.set_token_id(token->id);
  req.set_token_proof(crypto::EnrollProof(token->secret, token->id, config.device_id, csr_der));
  req.set_csr_pem(keys->csr);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::EnrollResponse resp;
  grpc::Status s = stub->Enroll(&ctx, req, &resp);
  if (!s.ok()) {
    if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED && retry_after != nullptr) {
      // The coordinator's rate limit says when: at least that long (else the caller's backoff).
      *retry_after = std::chrono::milliseconds(0);
      auto hint = ctx.GetServerTrailingMetadata().find("fleet-retry-after-ms");
      if (hint != ctx.GetServerTrailingMetadata().end()) {
        const std::string ms(hint->second.data(), hint->second.size());
        if (!ms.empty() && ms.size() < 10 &&
            ms.find_first_not_of("0123456789") == std::string::npos) {
          *retry_after = std::chrono::milliseconds(std::stoll(ms));
        }
      }
    }
    return FromGrpcStatus(s);
  }
  return Accept(config, *keys, b.ca_pem, resp, now);
}

StatusOr<DeviceCredentials> RenewCertificate(v1::Device::Stub* stub, const ClientConfig& config,
                                             const DeviceCredentials& current, int64_t now) {
  ASSIGN_OR_RETURN(std::unique_ptr<NewKeys> keys, KeysAndCsr(config.device_id));
  ASSIGN_OR_RETURN(std::string csr_der, crypto::CsrDer(keys->csr));
  v1::RenewRequest req;
  req.set_protocol_version(kProtocolVersion);
  req.set_device_id(config.device_id);
  req.set_csr_pem(keys->csr);
  // Proof that this device holds the key of the certificate being renewed.
  ASSIGN_OR_RETURN(
      std::string signature,
      crypto::SignWithKey(current.key_pem,
                          crypto::RenewalMessage(config.device_id, csr_der, current.cert.serial)));
  req.set_possession_signature(signature);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::EnrollResponse resp;
  grpc::Status s = stub->Renew(&ctx, req, &resp);
  if (!s.ok()) return FromGrpcStatus(s);
  return Accept(config, *keys, current.ca_pem, resp, now);
}

}  // namespace fleet
