#include "crypto/pki.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sodium.h>

#include <algorithm>
#include <ctime>
#include <map>
#include <memory>
#include <mutex>

namespace fleet::crypto {
namespace {

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
template <typename T, void (*F)(T*)>
using Ptr = std::unique_ptr<T, Deleter<T, F>>;

using Bio = Ptr<BIO, BIO_free_all>;
using Key = Ptr<EVP_PKEY, EVP_PKEY_free>;
using Cert = Ptr<X509, X509_free>;
using Req = Ptr<X509_REQ, X509_REQ_free>;
using Store = Ptr<X509_STORE, X509_STORE_free>;
using StoreCtx = Ptr<X509_STORE_CTX, X509_STORE_CTX_free>;
using Names = Ptr<GENERAL_NAMES, GENERAL_NAMES_free>;
using Bignum = Ptr<BIGNUM, BN_free>;
using Object = Ptr<ASN1_OBJECT, ASN1_OBJECT_free>;
using Octets = Ptr<ASN1_OCTET_STRING, ASN1_OCTET_STRING_free>;
using Extension = Ptr<X509_EXTENSION, X509_EXTENSION_free>;

void FreeExtensions(STACK_OF(X509_EXTENSION) * s) {
  sk_X509_EXTENSION_pop_free(s, X509_EXTENSION_free);
}
using Extensions = Ptr<STACK_OF(X509_EXTENSION), FreeExtensions>;

constexpr char kUriPrefix[] = "fleetfl://";
constexpr size_t kMaxPem = 64 * 1024;

// The most recent OpenSSL error as text, or `fallback`; clears the queue.
std::string SslError(const std::string& fallback) {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return fallback;
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return fallback + " (" + buf + ")";
}

Bio ReadBio(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

std::string BioString(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

StatusOr<Key> LoadPrivateKey(const std::string& pem) {
  if (pem.size() > kMaxPem) return InvalidArgument("private key PEM too large");
  Bio bio = ReadBio(pem);
  Key key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return InvalidArgument(SslError("not a PEM private key"));
  return key;
}

StatusOr<Key> LoadPublicKey(const std::string& pem) {
  if (pem.size() > kMaxPem) return InvalidArgument("public key PEM too large");
  Bio bio = ReadBio(pem);
  Key key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return InvalidArgument(SslError("not a PEM public key"));
  return key;
}

StatusOr<Cert> LoadCert(const std::string& pem) {
  if (pem.size() > kMaxPem) return InvalidArgument("certificate PEM too large");
  Bio bio = ReadBio(pem);
  Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return InvalidArgument(SslError("not a PEM certificate"));
  return cert;
}

bool IsP256(EVP_PKEY* key) {
  if (!EVP_PKEY_is_a(key, "EC")) return false;
  char group[64] = {};
  size_t len = 0;
  return EVP_PKEY_get_group_name(key, group, sizeof group, &len) == 1 &&
         std::string(group) == "prime256v1";
}

StatusOr<std::string> PemOf(X509* cert) {
  Bio out(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509(out.get(), cert)) return Internal(SslError("cannot encode certificate"));
  return BioString(out.get());
}

Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return Internal(SslError("cannot build extension " + value));
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (!ok) return Internal(SslError("cannot add extension " + value));
  return OkStatus();
}

Status SetCommon(X509* cert, const std::string& common_name, int64_t not_before,
                 int64_t not_after, EVP_PKEY* subject_key) {
  if (not_after <= not_before) return InvalidArgument("certificate lifetime must be positive");
  X509_set_version(cert, 2);
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1) return Internal("CSPRNG failed");
  serial[0] &= 0x7f;  // positive
  serial[0] |= 0x40;  // and always 16 bytes long
  Bignum bn(BN_bin2bn(serial, sizeof serial, nullptr));
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert))) {
    return Internal(SslError("cannot set serial"));
  }
  if (!ASN1_TIME_set(X509_getm_notBefore(cert), static_cast<time_t>(not_before)) ||
      !ASN1_TIME_set(X509_getm_notAfter(cert), static_cast<time_t>(not_after))) {
    return Internal(SslError("cannot set validity"));
  }
  X509_NAME* name = X509_get_subject_name(cert);
  if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                  reinterpret_cast<const unsigned char*>(common_name.c_str()), -1,
                                  -1, 0)) {
    return InvalidArgument(SslError("bad common name"));
  }
  if (!X509_set_pubkey(cert, subject_key)) return Internal(SslError("cannot set public key"));
  return OkStatus();
}

Object SecAggKeyObject() { return Object(OBJ_txt2obj(kSecAggKeyOid, /*no_name=*/1)); }

// The kSecAggKeyOid extension carrying `key` (32 raw bytes).
StatusOr<Extension> SecAggKeyExtension(const std::string& key) {
  if (key.size() != kSecAggKeyBytes) {
    return InvalidArgument("secure-aggregation key must be " + std::to_string(kSecAggKeyBytes) +
                           " bytes, got " + std::to_string(key.size()));
  }
  Octets inner(ASN1_OCTET_STRING_new());
  if (!inner ||
      !ASN1_OCTET_STRING_set(inner.get(), reinterpret_cast<const unsigned char*>(key.data()),
                             static_cast<int>(key.size()))) {
    return Internal(SslError("cannot encode secure-aggregation key"));
  }
  unsigned char* der = nullptr;
  int len = i2d_ASN1_OCTET_STRING(inner.get(), &der);
  if (len <= 0) return Internal(SslError("cannot encode secure-aggregation key"));
  Octets value(ASN1_OCTET_STRING_new());
  const bool set = value && ASN1_OCTET_STRING_set(value.get(), der, len);
  OPENSSL_free(der);
  Object oid = SecAggKeyObject();
  if (!set || !oid) return Internal(SslError("cannot encode secure-aggregation key"));
  Extension ext(X509_EXTENSION_create_by_OBJ(nullptr, oid.get(), /*crit=*/0, value.get()));
  if (!ext) return Internal(SslError("cannot build secure-aggregation key extension"));
  return ext;
}

// The key in a kSecAggKeyOid extension's value.
StatusOr<std::string> SecAggKeyOf(X509_EXTENSION* ext) {
  const ASN1_OCTET_STRING* value = X509_EXTENSION_get_data(ext);
  const unsigned char* p = ASN1_STRING_get0_data(value);
  const long n = ASN1_STRING_length(value);
  Octets inner(d2i_ASN1_OCTET_STRING(nullptr, &p, n));
  if (!inner || p != ASN1_STRING_get0_data(value) + n) {
    ERR_clear_error();
    return InvalidArgument("secure-aggregation key extension is not a DER OCTET STRING");
  }
  if (ASN1_STRING_length(inner.get()) != static_cast<int>(kSecAggKeyBytes)) {
    return InvalidArgument("secure-aggregation key extension holds " +
                           std::to_string(ASN1_STRING_length(inner.get())) + " bytes, expected " +
                           std::to_string(kSecAggKeyBytes));
  }
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(inner.get())),
                     kSecAggKeyBytes);
}

// The key of the one kSecAggKeyOid extension in `exts`, "" when there is none.
StatusOr<std::string> FindSecAggKey(const STACK_OF(X509_EXTENSION) * exts) {
  Object oid = SecAggKeyObject();
  if (!oid) return Internal(SslError("bad secure-aggregation key OID"));
  const int at = X509v3_get_ext_by_OBJ(exts, oid.get(), -1);
  if (at < 0) return std::string();
  if (X509v3_get_ext_by_OBJ(exts, oid.get(), at) >= 0) {
    return InvalidArgument("two secure-aggregation key extensions");
  }
  return SecAggKeyOf(X509v3_get_ext(exts, at));
}

int64_t UnixTime(const ASN1_TIME* t) {
  struct tm tm = {};
  if (!ASN1_TIME_to_tm(t, &tm)) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

std::string CommonName(X509_NAME* name) {
  int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (idx < 0) return "";
  ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, s);
  if (len < 0) return "";
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

// The fields of CertInfo from a parsed certificate.
StatusOr<CertInfo> InfoOf(X509* cert) {
  CertInfo info;
  Bignum bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
  if (bn) {
    char* hex = BN_bn2hex(bn.get());
    for (char* p = hex; p && *p; ++p) info.serial += static_cast<char>(tolower(*p));
    OPENSSL_free(hex);
  }
  info.common_name = CommonName(X509_get_subject_name(cert));
  info.not_before = UnixTime(X509_get0_notBefore(cert));
  info.not_after = UnixTime(X509_get0_notAfter(cert));
  ASSIGN_OR_RETURN(info.secagg_public_key, FindSecAggKey(X509_get0_extensions(cert)));
  Names names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
    if (gn->type != GEN_URI) continue;
    const ASN1_IA5STRING* uri = gn->d.uniformResourceIdentifier;
    std::string u(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                  static_cast<size_t>(ASN1_STRING_length(uri)));
    for (CertRole role :
         {CertRole::kDevice, CertRole::kAdmin, CertRole::kCoordinator, CertRole::kCaAdmin}) {
      std::string prefix = IdentityUri(role, "");
      if (u.size() > prefix.size() && u.compare(0, prefix.size(), prefix) == 0) {
        if (info.role != CertRole::kNone) return InvalidArgument("certificate has two identities");
        info.role = role;
        info.id = u.substr(prefix.size());
      }
    }
  }
  return info;
}

StatusOr<Cert> LoadDerCert(std::string_view der) {
  if (der.empty()) return InvalidArgument("no certificate");
  if (der.size() > kMaxPem) return InvalidArgument("certificate too large");
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  const unsigned char* const end = p + der.size();
  Cert cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert || p != end) {
    ERR_clear_error();
    return InvalidArgument("not a DER certificate");
  }
  return cert;
}

}  // namespace

std::string IdentityUri(CertRole role, const std::string& id) {
  switch (role) {
    case CertRole::kDevice: return std::string(kUriPrefix) + "device/" + id;
    case CertRole::kAdmin: return std::string(kUriPrefix) + "admin/" + id;
    case CertRole::kCoordinator:
      return std::string(kUriPrefix) + "coordinator/" + id;
    case CertRole::kCaAdmin:
      return std::string(kUriPrefix) + "ca-admin/" + id;
    case CertRole::kNone: break;
  }
  return "";
}

StatusOr<std::string> GenerateP256Key() {
  Key key(EVP_EC_gen("P-256"));
  if (!key) return Internal(SslError("P-256 key generation failed"));
  Bio out(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PrivateKey(out.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr)) {
    return Internal(SslError("cannot encode private key"));
  }
  std::string pem = BioString(out.get());
  return pem;
}

StatusOr<std::string> PublicKeyOf(const std::string& key_pem) {
  ASSIGN_OR_RETURN(Key key, LoadPrivateKey(key_pem));
  Bio out(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PUBKEY(out.get(), key.get())) {
    return Internal(SslError("cannot encode public key"));
  }
  return BioString(out.get());
}

StatusOr<std::string> MakeCaCertificate(const std::string& ca_key_pem, const std::string& name,
                                        int64_t not_before, int64_t not_after) {
  ASSIGN_OR_RETURN(Key key, LoadPrivateKey(ca_key_pem));
  Cert cert(X509_new());
  RETURN_IF_ERROR(SetCommon(cert.get(), name, not_before, not_after, key.get()));
  X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get()));
  RETURN_IF_ERROR(AddExtension(cert.get(), cert.get(), NID_basic_constraints,
                               "critical,CA:TRUE,pathlen:0"));
  RETURN_IF_ERROR(
      AddExtension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign"));
  RETURN_IF_ERROR(AddExtension(cert.get(), cert.get(), NID_subject_key_identifier, "hash"));
  if (!X509_sign(cert.get(), key.get(), EVP_sha256())) {
    return Internal(SslError("cannot sign CA certificate"));
  }
  return PemOf(cert.get());
}

StatusOr<std::string> IssueCertificate(const std::string& ca_cert_pem,
                                       const std::string& ca_key_pem, const CertRequest& req) {
  ASSIGN_OR_RETURN(Cert ca, LoadCert(ca_cert_pem));
  ASSIGN_OR_RETURN(Key ca_key, LoadPrivateKey(ca_key_pem));
  ASSIGN_OR_RETURN(Key subject, LoadPublicKey(req.public_key_pem));
  if (!IsP256(subject.get())) return InvalidArgument("subject key must be EC P-256");
  Cert cert(X509_new());
  RETURN_IF_ERROR(
      SetCommon(cert.get(), req.common_name, req.not_before, req.not_after, subject.get()));
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.get()));
  RETURN_IF_ERROR(AddExtension(cert.get(), ca.get(), NID_basic_constraints, "critical,CA:FALSE"));
  RETURN_IF_ERROR(AddExtension(cert.get(), ca.get(), NID_key_usage, "critical,digitalSignature"));
  RETURN_IF_ERROR(AddExtension(cert.get(), ca.get(), NID_authority_key_identifier, "keyid"));
  std::string san, eku;
  if (req.role != CertRole::kNone) {
    san = "URI:" + IdentityUri(req.role, req.common_name);
    eku = "clientAuth";
  }
  for (const auto& d : req.dns_names) san += (san.empty() ? "DNS:" : ",DNS:") + d;
  for (const auto& ip : req.ip_addresses) san += (san.empty() ? "IP:" : ",IP:") + ip;
  if (!req.dns_names.empty() || !req.ip_addresses.empty()) {
    eku += eku.empty() ? "serverAuth" : ",serverAuth";
  }
  if (!san.empty()) RETURN_IF_ERROR(AddExtension(cert.get(), ca.get(), NID_subject_alt_name, san));
  if (!eku.empty()) RETURN_IF_ERROR(AddExtension(cert.get(), ca.get(), NID_ext_key_usage, eku));
  if (!req.secagg_public_key.empty()) {
    ASSIGN_OR_RETURN(Extension ext, SecAggKeyExtension(req.secagg_public_key));
    if (!X509_add_ext(cert.get(), ext.get(), -1)) {
      return Internal(SslError("cannot add secure-aggregation key extension"));
    }
  }
  if (!X509_sign(cert.get(), ca_key.get(), EVP_sha256())) {
    return Internal(SslError("cannot sign certificate"));
  }
  return PemOf(cert.get());
}

StatusOr<std::string> MakeCsr(const std::string& key_pem, const std::string& common_name,
                              const std::string& secagg_public_key) {
  ASSIGN_OR_RETURN(Key key, LoadPrivateKey(key_pem));
  Req req(X509_REQ_new());
  X509_REQ_set_version(req.get(), 0);
  if (!secagg_public_key.empty()) {
    ASSIGN_OR_RETURN(Extension ext, SecAggKeyExtension(secagg_public_key));
    Extensions exts(sk_X509_EXTENSION_new_null());
    if (!exts || !sk_X509_EXTENSION_push(exts.get(), ext.get())) {
      return Internal(SslError("cannot build CSR extensions"));
    }
    ext.release();  // owned by exts now
    if (!X509_REQ_add_extensions(req.get(), exts.get())) {
      return Internal(SslError("cannot add CSR extensions"));
    }
  }
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                  reinterpret_cast<const unsigned char*>(common_name.c_str()), -1,
                                  -1, 0) ||
      !X509_REQ_set_pubkey(req.get(), key.get()) ||
      !X509_REQ_sign(req.get(), key.get(), EVP_sha256())) {
    return Internal(SslError("cannot build CSR"));
  }
  Bio out(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509_REQ(out.get(), req.get())) return Internal(SslError("cannot encode CSR"));
  return BioString(out.get());
}

StatusOr<std::string> CsrDer(const std::string& pem) {
  if (pem.size() > kMaxPem) return InvalidArgument("CSR too large");
  Bio bio = ReadBio(pem);
  Req req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) return InvalidArgument(SslError("not a PEM certificate signing request"));
  unsigned char* der = nullptr;
  const int len = i2d_X509_REQ(req.get(), &der);
  if (len <= 0) return Internal(SslError("cannot encode CSR"));
  std::string out(reinterpret_cast<const char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

StatusOr<std::string> SignWithKey(const std::string& key_pem, std::string_view message) {
  ASSIGN_OR_RETURN(Key key, LoadPrivateKey(key_pem));
  Ptr<EVP_MD_CTX, EVP_MD_CTX_free> ctx(EVP_MD_CTX_new());
  size_t len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1) {
    return Internal(SslError("cannot sign"));
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1) {
    return Internal(SslError("cannot sign"));
  }
  sig.resize(len);
  return sig;
}

bool VerifyWithCertificate(const std::string& cert_pem, std::string_view message,
                           std::string_view signature) {
  StatusOr<Cert> cert = LoadCert(cert_pem);
  if (!cert.ok()) return false;
  Key key(X509_get_pubkey(cert->get()));
  Ptr<EVP_MD_CTX, EVP_MD_CTX_free> ctx(EVP_MD_CTX_new());
  const bool ok =
      key && ctx &&
      EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.get()) == 1 &&
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                       signature.size(), reinterpret_cast<const unsigned char*>(message.data()),
                       message.size()) == 1;
  ERR_clear_error();
  return ok;
}

StatusOr<CsrInfo> ParseCsr(const std::string& pem) {
  if (pem.size() > kMaxPem) return InvalidArgument("CSR too large");
  Bio bio = ReadBio(pem);
  Req req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) return InvalidArgument(SslError("not a PEM certificate signing request"));
  Key key(X509_REQ_get_pubkey(req.get()));
  if (!key) return InvalidArgument(SslError("CSR has no usable public key"));
  if (!IsP256(key.get())) return InvalidArgument("CSR key must be EC P-256");
  if (X509_REQ_verify(req.get(), key.get()) != 1) {
    return InvalidArgument(SslError("CSR signature does not verify"));
  }
  CsrInfo info;
  info.common_name = CommonName(X509_REQ_get_subject_name(req.get()));
  if (info.common_name.empty()) return InvalidArgument("CSR subject has no common name");
  Extensions exts(X509_REQ_get_extensions(req.get()));
  ERR_clear_error();  // a CSR without extensions leaves an error on the queue
  if (exts) {
    ASSIGN_OR_RETURN(info.secagg_public_key, FindSecAggKey(exts.get()));
  }
  Bio out(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PUBKEY(out.get(), key.get())) return Internal(SslError("cannot encode key"));
  info.public_key_pem = BioString(out.get());
  return info;
}

StatusOr<CertInfo> ParseCertificate(const std::string& pem) {
  ASSIGN_OR_RETURN(Cert cert, LoadCert(pem));
  return InfoOf(cert.get());
}

namespace {

// Chain of `cert` to the CA in `store`, at time `now`.
Status VerifyChain(X509_STORE* store, X509* cert, int64_t now) {
  StoreCtx ctx(X509_STORE_CTX_new());
  if (!ctx || !X509_STORE_CTX_init(ctx.get(), store, cert, nullptr)) {
    return Internal(SslError("cannot set up certificate verification"));
  }
  X509_STORE_CTX_set_time(ctx.get(), 0, static_cast<time_t>(now));
  if (X509_verify_cert(ctx.get()) != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return Status(StatusCode::kUnauthenticated,
                  std::string("certificate rejected: ") + X509_verify_cert_error_string(err));
  }
  return OkStatus();
}

}  // namespace

Status VerifyCertificate(const std::string& cert_pem, const std::string& ca_cert_pem, int64_t now) {
  ASSIGN_OR_RETURN(Cert cert, LoadCert(cert_pem));
  ASSIGN_OR_RETURN(Cert ca, LoadCert(ca_cert_pem));
  Store store(X509_STORE_new());
  if (!store || !X509_STORE_add_cert(store.get(), ca.get())) {
    return Internal(SslError("cannot set up certificate verification"));
  }
  return VerifyChain(store.get(), cert.get(), now);
}

StatusOr<std::string> CertificateDer(const std::string& pem) {
  ASSIGN_OR_RETURN(Cert cert, LoadCert(pem));
  unsigned char* der = nullptr;
  const int len = i2d_X509(cert.get(), &der);
  if (len <= 0) return Internal(SslError("cannot encode certificate"));
  std::string out(reinterpret_cast<const char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

struct CertificateVerifier::Impl {
  struct Entry {
    CertInfo info;
    int64_t valid_from = 0, valid_until = 0;  // the certificate's and the CA's periods, intersected
  };
  Store store;
  int64_t ca_not_before = 0, ca_not_after = 0;
  size_t max_cached = 0;
  mutable std::mutex mu;
  mutable std::map<std::string, Entry> cache;  // by BLAKE2b-256 of the DER bytes
  mutable uint64_t full = 0;
};

CertificateVerifier::CertificateVerifier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CertificateVerifier::~CertificateVerifier() = default;

StatusOr<std::unique_ptr<CertificateVerifier>> CertificateVerifier::Create(
    const std::string& ca_cert_pem, size_t max_cached) {
  ASSIGN_OR_RETURN(Cert ca, LoadCert(ca_cert_pem));
  auto impl = std::make_unique<Impl>();
  impl->store.reset(X509_STORE_new());
  if (!impl->store || !X509_STORE_add_cert(impl->store.get(), ca.get())) {
    return Internal(SslError("cannot set up certificate verification"));
  }
  impl->ca_not_before = UnixTime(X509_get0_notBefore(ca.get()));
  impl->ca_not_after = UnixTime(X509_get0_notAfter(ca.get()));
  impl->max_cached = max_cached;
  return std::unique_ptr<CertificateVerifier>(new CertificateVerifier(std::move(impl)));
}

StatusOr<CertInfo> CertificateVerifier::Verify(std::string_view der, int64_t now) const {
  std::string hash(crypto_generichash_BYTES, '\0');
  crypto_generichash(reinterpret_cast<unsigned char*>(hash.data()), hash.size(),
                     reinterpret_cast<const unsigned char*>(der.data()), der.size(), nullptr, 0);
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto it = impl_->cache.find(hash);
    if (it != impl_->cache.end()) {
      const Impl::Entry& e = it->second;
      // The same answers X509_verify_cert gives for these times.
      if (now < e.valid_from) {
        return Status(StatusCode::kUnauthenticated,
                      "certificate rejected: certificate is not yet valid");
      }
      if (now > e.valid_until) {
        return Status(StatusCode::kUnauthenticated,
                      "certificate rejected: certificate has expired");
      }
      return e.info;
    }
  }
  ASSIGN_OR_RETURN(Cert cert, LoadDerCert(der));
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    ++impl_->full;
  }
  RETURN_IF_ERROR(VerifyChain(impl_->store.get(), cert.get(), now));
  Impl::Entry e;
  ASSIGN_OR_RETURN(e.info, InfoOf(cert.get()));
  e.valid_from = std::max(e.info.not_before, impl_->ca_not_before);
  e.valid_until = std::min(e.info.not_after, impl_->ca_not_after);
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->cache.size() >= impl_->max_cached) impl_->cache.clear();
  impl_->cache[hash] = e;
  return e.info;
}

uint64_t CertificateVerifier::full_verifications() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->full;
}

bool KeyMatchesCertificate(const std::string& key_pem, const std::string& cert_pem) {
  StatusOr<Key> key = LoadPrivateKey(key_pem);
  StatusOr<Cert> cert = LoadCert(cert_pem);
  if (!key.ok() || !cert.ok()) return false;
  bool ok = X509_check_private_key(cert->get(), key->get()) == 1;
  ERR_clear_error();
  return ok;
}

}  // namespace fleet::crypto
