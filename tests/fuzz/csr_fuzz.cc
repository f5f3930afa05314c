// Fuzz target: certificate signing requests, the first thing the coordinator parses from a party
// it does not know yet (Enroll, reachable with a bootstrap token and no certificate; and Renew).
// Runs what the coordinator and the registrar do with one (coordinator/registrar.cc):
// Authority::CheckCsrFor (ParseCsr, the device-id and SecAgg-key checks), CsrDer (the bytes an
// enrollment proof and a renewal signature cover), then the real Authority (a PKI made once in a
// temporary directory) issues the certificate.
//
// Input: byte 0 even: the rest is DER, wrapped in PEM as a device sends it; odd: the rest is the
// PEM text itself. Checks beyond "no crash": a CSR that passes every check yields a certificate
// that chains to the CA and names exactly that device and that SecAgg key, as a device checks it
// before use (client/identity.cc); its DER (what proofs cover) is the same on every call and
// is the same CSR again.
#include <cstdlib>
#include <string>

#include "common/config.h"
#include "coordinator/authority.h"
#include "crypto/pki.h"
#include "crypto/random.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/pem.h"

namespace {

constexpr int64_t kNow = 1'800'000'000;

const fleet::Authority& Ca() {
  static const fleet::Authority* authority = [] {
    FUZZ_CHECK(fleet::crypto::Init(), "libsodium init");
    char dir[] = "/tmp/fleet-fuzz-csr.XXXXXX";
    FUZZ_CHECK(::mkdtemp(dir) != nullptr, "mkdtemp");
    const std::string state = std::string(dir) + "/state";
    fleet::Status s = fleet::InitPki(state, fleet::InitOptions{}, kNow - 86400);
    FUZZ_CHECK(s.ok(), "InitPki: %s", s.message().c_str());
    auto a = fleet::Authority::Load(state);
    FUZZ_CHECK(a.ok(), "Authority::Load: %s", a.status().message().c_str());
    std::system(("rm -rf '" + std::string(dir) + "'").c_str());
    return std::move(a).value().release();
  }();
  return *authority;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fleet;
  const Authority& ca = Ca();
  fuzz::Input in(data, size);
  const bool der = in.Byte() % 2 == 0;
  const std::string_view rest = in.Rest();
  const std::string pem = der ? fuzz::Pem("CERTIFICATE REQUEST", rest) : std::string(rest);

  StatusOr<crypto::CsrInfo> csr = crypto::ParseCsr(pem);
  if (!csr.ok()) return 0;
  FUZZ_CHECK(!csr->common_name.empty(), "CSR accepted without a common name");
  // Enroll validates the requested id, and CheckCsrFor wants the CSR to name exactly it.
  const std::string device_id = csr->common_name;
  if (!ValidateDeviceId(device_id).ok()) return 0;
  StatusOr<crypto::CsrInfo> checked = Authority::CheckCsrFor(device_id, pem);
  FUZZ_CHECK(checked.ok() == Authority::CheckDeviceCsr(*csr).ok(),
             "CheckCsrFor and CheckDeviceCsr disagree: %s", checked.status().message().c_str());
  if (!checked.ok()) return 0;
  FUZZ_CHECK(checked->public_key_pem == csr->public_key_pem &&
                 checked->secagg_public_key == csr->secagg_public_key,
             "CheckCsrFor returned another CSR");
  StatusOr<std::string> csr_der = crypto::CsrDer(pem);
  FUZZ_CHECK(csr_der.ok(), "a checked CSR has no DER: %s", csr_der.status().message().c_str());
  const std::string again_pem = fuzz::Pem("CERTIFICATE REQUEST", *csr_der);
  StatusOr<crypto::CsrInfo> again = crypto::ParseCsr(again_pem);
  FUZZ_CHECK(again.ok() && again->common_name == csr->common_name &&
                 again->public_key_pem == csr->public_key_pem &&
                 again->secagg_public_key == csr->secagg_public_key,
             "the DER of a checked CSR is another CSR");
  StatusOr<std::string> der_again = crypto::CsrDer(pem);
  FUZZ_CHECK(der_again.ok() && *der_again == *csr_der, "CsrDer is not deterministic");
  StatusOr<std::string> cert = ca.IssueDeviceCertificate(*csr, device_id, kNow, 7 * 86400);
  FUZZ_CHECK(cert.ok(), "a CSR that passed every check was not issued: %s",
             cert.status().message().c_str());
  Status chain = crypto::VerifyCertificate(*cert, ca.ca_pem(), kNow);
  FUZZ_CHECK(chain.ok(), "issued certificate does not chain: %s", chain.message().c_str());
  StatusOr<crypto::CertInfo> info = crypto::ParseCertificate(*cert);
  FUZZ_CHECK(info.ok(), "issued certificate does not parse: %s", info.status().message().c_str());
  FUZZ_CHECK(info->role == crypto::CertRole::kDevice && info->id == device_id &&
                 info->common_name == device_id,
             "issued certificate names '%s', not the device", info->id.c_str());
  FUZZ_CHECK(info->secagg_public_key == csr->secagg_public_key,
             "issued certificate certifies another SecAgg key than the CSR asked for");
  return 0;
}
