// The CA apart from the aggregator (issue 16 item 3, second bullet): `fleet-coordinator ca init`
// + `ca serve` hold the CA key and the tokens; the coordinator, started with --ca-endpoint and a
// state directory without ca.key, relays enrollments and renewals it cannot forge. Real CA,
// coordinator, fleetctl and fleet-client processes; where the coordinator's side is the attacker,
// the test speaks to the CA with the coordinator's own credentials.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/grpc_util.h"
#include "crypto/enroll_token.h"
#include "crypto/pki.h"
#include "harness.h"
#include "proto/fleet.grpc.pb.h"

namespace fleet::testing {
namespace {

using grpc::StatusCode;

int Count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

std::string TokenFrom(const CommandResult& r) {
  size_t at = r.output.find("fleet1_");
  return at == std::string::npos ? "" : r.output.substr(at, r.output.find('\n', at) - at);
}

// mTLS options with a certificate and key from a pki directory.
ClientTlsOptions FromPki(const std::string& pki, const std::string& name) {
  ClientTlsOptions tls;
  tls.ca_file = pki + "/ca.pem";
  tls.cert_file = pki + "/" + name + ".pem";
  tls.key_file = pki + "/" + name + ".key";
  return tls;
}

std::string NewCsr(const std::string& id, std::string* key_pem) {
  *key_pem = *crypto::GenerateP256Key();
  return *crypto::MakeCsr(*key_pem, id,
                          crypto::ToString(crypto::SigningKey::Generate().public_key()));
}

v1::CaEnrollRequest CaEnroll(const std::string& id, const std::string& token,
                             const std::string& csr) {
  v1::EnrollRequest device = MakeEnrollRequest(id, token, csr);
  v1::CaEnrollRequest req;
  req.set_protocol_version(kProtocolVersion);
  req.set_device_id(id);
  req.set_csr_pem(csr);
  req.set_token_id(device.token_id());
  req.set_token_proof(device.token_proof());
  req.set_peer("127.0.0.1");
  return req;
}

TEST(SeparateCa, DevicesEnrollRenewAndRunASecureRoundThroughACaThatHoldsTheKey) {
  Cluster c(ClusterOptions{/*separate_ca=*/true});
  EXPECT_FALSE(FileExists(c.state_dir() + "/pki/ca.key")) << "the aggregator holds no CA key";
  EXPECT_TRUE(FileExists(c.ca_state_dir() + "/pki/ca.key"));
  ASSERT_TRUE(c.StartCa({"--device-cert-ttl", "15s"})) << c.ca_process().Log();
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  std::vector<Process*> clients;
  for (int s : {1, 3, 5, 6}) clients.push_back(&c.StartHarClient(s));
  for (Process* p : clients) {
    ASSERT_TRUE(WaitFor([&] { return p->Log().find("certificate renewed") != std::string::npos; },
                        std::chrono::seconds(60)))
        << p->Log() << c.ca_process().Log();
  }
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() >= 4; }, std::chrono::seconds(30)));
  auto submit = c.Fleetctl(
      {"job", "submit", "--watch", "-f",
       c.WriteJob("it-separate-ca", 1, 4, 4,
                  "max_round_retries: 0\nsecure_aggregation: {neighbours: 4, threshold: 3}\n")});
  ASSERT_EQ(submit.exit_code, 0) << submit.output << c.coordinator().Log();
  const std::string id = submit.output.substr(0, submit.output.find('\n'));
  const std::string job = c.Fleetctl({"-o", "json", "job", "get", id}).output;
  EXPECT_EQ(JsonInts(job, "participants"), (std::vector<int>{4})) << job;

  // Both sides keep a record: the CA of what it authorized, the coordinator of what it relayed.
  const std::string ca_audit = ReadAll(c.ca_state_dir() + "/audit.log");
  const std::string co_audit = ReadAll(c.state_dir() + "/audit.log");
  EXPECT_EQ(Count(ca_audit, "\"event\":\"enroll\""), 4) << ca_audit;
  EXPECT_GE(Count(ca_audit, "\"event\":\"renew\""), 4);
  EXPECT_EQ(Count(co_audit, "\"event\":\"enroll\""), 4);
  EXPECT_GE(Count(co_audit, "\"event\":\"renew\""), 4);
  EXPECT_EQ(Count(co_audit, "token_use"), 0) << "tokens are the CA's business";
  // The coordinator never saw a token secret.
  const std::string token = TokenFrom(CommandResult{0, ReadAll(c.bootstrap())});
  ASSERT_FALSE(token.empty());
  EXPECT_EQ(c.coordinator().Log().find(token.substr(24)), std::string::npos);
  EXPECT_EQ(co_audit.find(token.substr(24)), std::string::npos);

  // Tokens are made at the CA, not through the coordinator.
  CommandResult made_here = c.Fleetctl({"token", "create"});
  EXPECT_EQ(made_here.exit_code, 1) << made_here.output;
  EXPECT_NE(made_here.output.find("bootstrap tokens are made and managed there"), std::string::npos)
      << made_here.output;
  // A reset goes through to the CA, which records who asked.
  CommandResult reset = c.Fleetctl({"device", "reset", "har-subject-1"});
  EXPECT_EQ(reset.exit_code, 0) << reset.output;
  EXPECT_NE(ReadAll(c.ca_state_dir() + "/audit.log")
                .find("\"actor\":\"coordinator/coordinator for admin\""),
            std::string::npos);
  EXPECT_TRUE(WaitFor([&] { return clients[0]->Log().find("enrolled again") != std::string::npos; },
                      std::chrono::seconds(30)))
      << clients[0]->Log();
}

// What a malicious coordinator could try with its own credentials, refused by the CA.
TEST(SeparateCa, TheCaAuthorizesEveryIssueItselfAndRefusesWhatTheCoordinatorCannotProve) {
  Cluster c(ClusterOptions{/*separate_ca=*/true});
  ASSERT_TRUE(c.StartCa()) << c.ca_process().Log();
  const std::string co_pki = c.state_dir() + "/pki";
  auto ca = v1::CertificateAuthority::NewStub(
      *MakeChannel(c.ca_address(), FromPki(co_pki, "ca-client"), 4 << 20));
  auto enroll = [&](const v1::CaEnrollRequest& req, v1::CaIssueResponse* out = nullptr) {
    grpc::ClientContext ctx;
    v1::CaIssueResponse resp;
    grpc::Status s = ca->Enroll(&ctx, req, &resp);
    if (out) *out = resp;
    return s;
  };
  CommandResult made = c.CaCommand({"token", "create", "--uses", "5"});
  ASSERT_EQ(made.exit_code, 0) << made.output;
  const std::string token = TokenFrom(made);
  std::string key1, key2, key3;
  const std::string csr1 = NewCsr("dev-1", &key1);

  // Forged: the token's id with a proof of the coordinator's making.
  v1::CaEnrollRequest forged = CaEnroll("dev-1", token, csr1);
  forged.set_token_proof(std::string(32, '\x42'));
  grpc::Status s = enroll(forged);
  EXPECT_EQ(s.error_code(), StatusCode::UNAUTHENTICATED);
  EXPECT_NE(s.error_message().find("invalid token"), std::string::npos) << s.error_message();
  // A device's proof for dev-2, used for dev-3 (with a CSR naming dev-3).
  const std::string csr3 = NewCsr("dev-3", &key3);
  v1::CaEnrollRequest other_id = CaEnroll("dev-2", token, csr3);
  other_id.set_device_id("dev-3");
  EXPECT_EQ(enroll(other_id).error_code(), StatusCode::UNAUTHENTICATED);
  // A device's proof for its CSR, with the coordinator's own key swapped in.
  const std::string csr1b = NewCsr("dev-1", &key2);
  v1::CaEnrollRequest swapped = CaEnroll("dev-1", token, csr1);
  swapped.set_csr_pem(csr1b);
  EXPECT_EQ(enroll(swapped).error_code(), StatusCode::UNAUTHENTICATED);
  // The genuine request, then the same request replayed.
  const v1::CaEnrollRequest genuine = CaEnroll("dev-1", token, csr1);
  v1::CaIssueResponse issued;
  ASSERT_TRUE(enroll(genuine, &issued).ok());
  EXPECT_EQ(crypto::ParseCertificate(issued.certificate_pem())->id, "dev-1");
  grpc::Status replay = enroll(genuine);
  EXPECT_EQ(replay.error_code(), StatusCode::FAILED_PRECONDITION) << replay.error_message();
  EXPECT_NE(replay.error_message().find("already has a valid certificate"), std::string::npos);

  // Renewal needs the current key.
  ClientTlsOptions current;
  current.cert_pem = issued.certificate_pem();
  current.key_pem = key1;
  auto renew = [&](const v1::RenewRequest& device, const std::string& cert,
                   v1::CaIssueResponse* out = nullptr) {
    v1::CaRenewRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_device_id(device.device_id());
    req.set_csr_pem(device.csr_pem());
    req.set_current_certificate_pem(cert);
    req.set_possession_signature(device.possession_signature());
    grpc::ClientContext ctx;
    v1::CaIssueResponse resp;
    grpc::Status st = ca->Renew(&ctx, req, &resp);
    if (out) *out = resp;
    return st;
  };
  std::string new_key;
  const std::string new_csr = NewCsr("dev-1", &new_key);
  ClientTlsOptions not_the_device = current;
  not_the_device.key_pem = *crypto::GenerateP256Key();
  grpc::Status no_possession =
      renew(MakeRenewRequest("dev-1", new_csr, not_the_device), issued.certificate_pem());
  EXPECT_EQ(no_possession.error_code(), StatusCode::PERMISSION_DENIED);
  EXPECT_NE(no_possession.error_message().find("no proof of possession"), std::string::npos)
      << no_possession.error_message();
  // The device's signature over its own new CSR, with another CSR sent in its place.
  v1::RenewRequest resigned = MakeRenewRequest("dev-1", new_csr, current);
  resigned.set_csr_pem(csr1b);
  EXPECT_EQ(renew(resigned, issued.certificate_pem()).error_code(), StatusCode::PERMISSION_DENIED);
  v1::CaIssueResponse renewed;
  ASSERT_TRUE(
      renew(MakeRenewRequest("dev-1", new_csr, current), issued.certificate_pem(), &renewed).ok());
  // The old certificate is not current any more, even with a valid signature.
  std::string later_key;
  grpc::Status stale = renew(MakeRenewRequest("dev-1", NewCsr("dev-1", &later_key), current),
                             issued.certificate_pem());
  EXPECT_EQ(stale.error_code(), StatusCode::UNAUTHENTICATED);
  EXPECT_NE(stale.error_message().find("is not the device's current certificate"),
            std::string::npos)
      << stale.error_message();

  // Only a CA administrator makes tokens: not the coordinator's CA identity, not its admin.
  for (const char* name : {"ca-client", "admin"}) {
    auto as = v1::CertificateAuthority::NewStub(
        *MakeChannel(c.ca_address(), FromPki(co_pki, name), 4 << 20));
    grpc::ClientContext ctx;
    v1::CreateTokenRequest req;
    req.set_ttl_s(3600);
    req.set_uses(1);
    v1::CreateTokenResponse resp;
    grpc::Status st = as->CreateToken(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), StatusCode::PERMISSION_DENIED) << name << ": " << st.error_message();
    EXPECT_TRUE(resp.token().empty());
  }
  // The coordinator's admin cannot enroll either (the coordinator identity only).
  {
    auto as_admin = v1::CertificateAuthority::NewStub(
        *MakeChannel(c.ca_address(), FromPki(co_pki, "admin"), 4 << 20));
    grpc::ClientContext ctx;
    v1::CaIssueResponse resp;
    std::string k;
    EXPECT_EQ(
        as_admin->Enroll(&ctx, CaEnroll("dev-4", token, NewCsr("dev-4", &k)), &resp).error_code(),
        StatusCode::PERMISSION_DENIED);
  }
  // Without a client certificate there is no handshake.
  ClientTlsOptions anonymous;
  anonymous.ca_file = co_pki + "/ca.pem";
  auto nobody = v1::CertificateAuthority::NewStub(*MakeChannel(c.ca_address(), anonymous, 4 << 20));
  grpc::ClientContext ctx;
  v1::ListTokensResponse list;
  EXPECT_EQ(nobody->ListTokens(&ctx, v1::ListTokensRequest(), &list).error_code(),
            StatusCode::UNAVAILABLE);

  // One enrollment, one renewal; the refusals issued nothing and spent one use only.
  const std::string audit = ReadAll(c.ca_state_dir() + "/audit.log");
  EXPECT_EQ(Count(audit, "\"event\":\"enroll\""), 1) << audit;
  EXPECT_EQ(Count(audit, "\"event\":\"renew\""), 1) << audit;
  EXPECT_EQ(Count(audit, "\"event\":\"token_use\""), 1) << audit;
  EXPECT_GE(Count(audit, "\"event\":\"enroll_refused\""), 1) << audit;
  CommandResult tokens = c.CaCommand({"token", "list", "--json"});
  EXPECT_NE(tokens.output.find("\"uses_left\":4"), std::string::npos) << tokens.output;
}

TEST(SeparateCa, ACoordinatorOfASeparateCaMustNotHoldTheCaKey) {
  Cluster c(ClusterOptions{/*separate_ca=*/true});
  ASSERT_TRUE(c.StartCa()) << c.ca_process().Log();
  const std::string key = c.state_dir() + "/pki/ca.key";
  ASSERT_TRUE(WriteFileAtomically(key, ReadAll(c.ca_state_dir() + "/pki/ca.key")).ok());
  EXPECT_FALSE(c.StartCoordinator());
  EXPECT_EQ(c.coordinator().Wait(std::chrono::seconds(10)), 2);
  EXPECT_NE(c.coordinator().Log().find("must not hold the CA key"), std::string::npos)
      << c.coordinator().Log();
  std::remove(key.c_str());
  EXPECT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  // `ca init` refuses to overwrite either PKI.
  CommandResult again = RunCommand({FLEET_COORDINATOR_BIN, "ca", "init", "--state-dir",
                                    c.ca_state_dir(), "--coordinator-state-dir", c.dir() + "/x"},
                                   c.dir());
  EXPECT_EQ(again.exit_code, 2) << again.output;
}

}  // namespace
}  // namespace fleet::testing
