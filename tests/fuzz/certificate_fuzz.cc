// Fuzz target: X.509 certificates from another party: the mTLS client certificate the
// coordinator reads at Join (ParseCertificate, CertificateDer), the certificate an enrollment
// response hands a device (VerifyCertificate against the pinned CA, ParseCertificate,
// KeyMatchesCertificate), and the neighbours' certificates SecAgg relays, which a device checks
// with crypto::CertificateVerifier.
//
// Input: byte 0 even: the rest is DER (wrapped in PEM for the PEM paths); odd: the rest is PEM
// text. Checks beyond "no crash": PEM and DER paths agree (CertificateDer re-parses to the same
// contents, the cached verifier and VerifyCertificate give the same verdict), and a certificate
// the verifier accepts is reported exactly as ParseCertificate reads it, on the first and on the
// cached call.
#include <string>

#include "crypto/pki.h"
#include "crypto/random.h"
#include "tests/fuzz/fuzz_pki.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/pem.h"

namespace {

constexpr int64_t kNow = fleet::fuzz::kFuzzNow;

struct Pki {
  std::string device_key;
  std::unique_ptr<fleet::crypto::CertificateVerifier> verifier;
};

// The fuzz CA (fuzz_pki.h), which the seed certificates chain to.
const Pki& Get() {
  static const Pki* pki = [] {
    using namespace fleet::crypto;
    auto* p = new Pki;
    p->device_key = GenerateP256Key().value();
    p->verifier = std::move(CertificateVerifier::Create(fleet::fuzz::FuzzCaCert(), 64)).value();
    return p;
  }();
  return *pki;
}

bool Same(const fleet::crypto::CertInfo& a, const fleet::crypto::CertInfo& b) {
  return a.serial == b.serial && a.common_name == b.common_name && a.role == b.role &&
         a.id == b.id && a.not_before == b.not_before && a.not_after == b.not_after &&
         a.secagg_public_key == b.secagg_public_key;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fleet;
  const Pki& pki = Get();
  fuzz::Input in(data, size);
  const bool der_input = in.Byte() % 2 == 0;
  const std::string_view rest = in.Rest();
  const std::string pem = der_input ? fuzz::Pem("CERTIFICATE", rest) : std::string(rest);

  StatusOr<crypto::CertInfo> info = crypto::ParseCertificate(pem);
  StatusOr<std::string> der = crypto::CertificateDer(pem);
  if (!der.ok()) {  // not a certificate at all: the checks below would all fail the same way
    FUZZ_CHECK(!info.ok(), "a certificate parsed without a DER encoding");
    FUZZ_CHECK(!crypto::VerifyCertificate(pem, fleet::fuzz::FuzzCaCert(), kNow).ok(),
               "a certificate without a DER encoding verified");
    return 0;
  }
  Status chain = crypto::VerifyCertificate(pem, fleet::fuzz::FuzzCaCert(), kNow);
  // Loading the PEM key costs most of an input (OpenSSL 3's decoders): only for certificates.
  (void)crypto::KeyMatchesCertificate(pki.device_key, pem);
  StatusOr<crypto::CertInfo> again = crypto::ParseCertificate(fuzz::Pem("CERTIFICATE", *der));
  FUZZ_CHECK(info.ok() == again.ok() && (!info.ok() || Same(*info, *again)),
             "the DER re-encoding reads differently");
  for (int call = 0; call < 2; ++call) {  // the second call answers from the cache
    StatusOr<crypto::CertInfo> verified = pki.verifier->Verify(*der, kNow);
    // The verifier also reads the contents: a chain that verifies with contents that do not
    // parse (say, two SecAgg key extensions) is refused.
    FUZZ_CHECK(verified.ok() == (chain.ok() && info.ok()),
               "verifier says %s, VerifyCertificate says %s",
               verified.ok() ? "valid" : verified.status().message().c_str(),
               chain.ok() ? "valid" : chain.message().c_str());
    if (verified.ok()) {
      FUZZ_CHECK(info.ok() && Same(*verified, *info),
                 "the verifier reports other contents than ParseCertificate");
    }
  }
  return 0;
}
