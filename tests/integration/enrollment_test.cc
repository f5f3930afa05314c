// Enrollment, mTLS enforcement, revocation, renewal and the audit trail against a real
// coordinator process (and real fleet-client processes where the device's own behaviour is
// what is tested). Every refusal is checked for its status code and, where relevant, its audit
// record.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <future>
#include <thread>

#include "common/grpc_util.h"
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

std::string NewToken(Cluster& c, const std::string& uses, const std::string& ttl = "1h") {
  CommandResult r = c.Fleetctl({"token", "create", "--uses", uses, "--ttl", ttl});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  size_t at = r.output.find("fleet1_");
  return at == std::string::npos ? "" : r.output.substr(at, r.output.find('\n', at) - at);
}

std::string TokenId(const std::string& token) { return token.substr(7, 16); }

// Enroll over server-authenticated TLS pinned to `ca_pem` (the cluster's CA by default).
grpc::Status Enroll(Cluster& c, const std::string& id, const std::string& token,
                    const std::string& csr = "", const std::string& ca_pem = "",
                    v1::EnrollResponse* out = nullptr) {
  ClientTlsOptions tls;
  tls.ca_pem = ca_pem.empty() ? ReadAll(c.ca()) : ca_pem;
  auto stub = v1::Enrollment::NewStub(*MakeChannel(c.address(), tls, 4 << 20));
  const std::string secagg_key = crypto::ToString(crypto::SigningKey::Generate().public_key());
  v1::EnrollRequest req = MakeEnrollRequest(
      id, token, csr.empty() ? *crypto::MakeCsr(*crypto::GenerateP256Key(), id, secagg_key) : csr);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::EnrollResponse resp;
  grpc::Status s = stub->Enroll(&ctx, req, &resp);
  if (out) *out = resp;
  return s;
}

grpc::Status JoinAs(Cluster& c, const ClientTlsOptions& tls, const std::string& id) {
  auto stub = v1::Device::NewStub(*MakeChannel(c.address(), tls, 4 << 20));
  v1::JoinRequest req;
  req.set_protocol_version(kProtocolVersion);
  req.set_device_id(id);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::JoinResponse resp;
  return stub->Join(&ctx, req, &resp);
}

std::string Audit(Cluster& c) { return ReadAll(c.dir() + "/coordinator/audit.log"); }

TEST(Enrollment, DeviceEnrollsAtBootThenReusesItsCertificateAcrossRestarts) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  Process& first = c.StartHarClient(1);
  ASSERT_TRUE(WaitFor([&] { return first.Log().find("joined") != std::string::npos; },
                      std::chrono::seconds(30)))
      << first.Log();
  EXPECT_NE(first.Log().find("enrolled: certificate"), std::string::npos) << first.Log();
  const std::string state = c.dir() + "/device-1";
  for (const char* f : {"/device.key", "/device.pem", "/ca.pem", "/model-signing.pub"}) {
    struct stat st {};
    ASSERT_EQ(stat((state + f).c_str(), &st), 0) << f;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << f;
  }
  auto cert = crypto::ParseCertificate(ReadAll(state + "/device.pem"));
  ASSERT_TRUE(cert.ok());
  EXPECT_EQ(cert->id, "har-subject-1");
  EXPECT_LE(cert->not_after - cert->not_before, 7 * 86400 + 300) << "short-lived by default";
  EXPECT_TRUE(crypto::VerifyCertificate(ReadAll(state + "/device.pem"), ReadAll(c.ca()),
                                        cert->not_before + 600)
                  .ok());
  EXPECT_EQ(Count(Audit(c), "\"event\":\"enroll\""), 1);

  first.Kill(SIGKILL);
  Process& again = c.StartHarClient(1);
  ASSERT_TRUE(WaitFor([&] { return Count(again.Log(), "joined") >= 2; },
                      std::chrono::seconds(30)))
      << again.Log();
  EXPECT_NE(again.Log().find("device certificate " + cert->serial), std::string::npos)
      << "the stored certificate is reused: " << again.Log();
  EXPECT_EQ(Count(Audit(c), "\"event\":\"enroll\""), 1) << "no second token use";
  EXPECT_NE(c.Fleetctl({"-o", "json", "token", "list"}).output.find("\"uses_left\": 999"),
            std::string::npos);
}

TEST(Enrollment, BadTokensCsrsAndBytesAreRefusedAuditedAndNeverCrash) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  const std::string once = NewToken(c, "1");
  EXPECT_TRUE(Enroll(c, "dev-1", once).ok());
  grpc::Status reused = Enroll(c, "dev-2", once);
  EXPECT_EQ(reused.error_code(), StatusCode::UNAUTHENTICATED);
  EXPECT_NE(reused.error_message().find("no uses left"), std::string::npos);

  std::string forged = once;
  forged.back() = forged.back() == '0' ? '1' : '0';
  EXPECT_NE(Enroll(c, "dev-3", forged).error_message().find("invalid token"), std::string::npos);
  EXPECT_NE(Enroll(c, "dev-3", "fleet1_nonsense").error_message().find("malformed"),
            std::string::npos);
  EXPECT_NE(Enroll(c, "dev-3", "fleet1_0123456789abcdef_" + std::string(64, 'a'))
                .error_message()
                .find("unknown token"),
            std::string::npos);

  const std::string brief = NewToken(c, "5", "1s");
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  grpc::Status expired = Enroll(c, "dev-3", brief);
  EXPECT_EQ(expired.error_code(), StatusCode::UNAUTHENTICATED);
  EXPECT_NE(expired.error_message().find("expired"), std::string::npos);

  const std::string revoked = NewToken(c, "5");
  EXPECT_EQ(c.Fleetctl({"token", "revoke", TokenId(revoked)}).exit_code, 0);
  EXPECT_NE(Enroll(c, "dev-3", revoked).error_message().find("revoked"), std::string::npos);

  const std::string good = NewToken(c, "5");
  std::string other_csr = *crypto::MakeCsr(*crypto::GenerateP256Key(), "somebody-else");
  grpc::Status wrong_id = Enroll(c, "dev-3", good, other_csr);
  EXPECT_EQ(wrong_id.error_code(), StatusCode::PERMISSION_DENIED);
  EXPECT_NE(wrong_id.error_message().find("somebody-else"), std::string::npos);
  for (const std::string& junk :
       {std::string("-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n"), std::string(200000, 'Q'),
        std::string("\x30\x82\xff\xff", 4)}) {
    EXPECT_EQ(Enroll(c, "dev-3", good, junk).error_code(), StatusCode::INVALID_ARGUMENT);
  }
  EXPECT_EQ(Enroll(c, "bad id", good).error_code(), StatusCode::INVALID_ARGUMENT);
  // None of those spent a use of the good token, and the coordinator is still serving.
  EXPECT_TRUE(c.coordinator().Running());
  EXPECT_TRUE(Enroll(c, "dev-3", good).ok());
  EXPECT_GE(Count(Audit(c), "\"event\":\"enroll_refused\""), 6);
  EXPECT_EQ(Count(Audit(c), "\"event\":\"enroll\""), 2);
  EXPECT_EQ(Audit(c).find(good.substr(24)), std::string::npos) << "token secrets never logged";
  EXPECT_EQ(c.coordinator().Log().find(good.substr(24)), std::string::npos);
}

TEST(Enrollment, PinningAnotherCaCannotEnroll) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  Cluster other;
  grpc::Status s = Enroll(c, "dev-1", NewToken(c, "1"), "", ReadAll(other.ca()));
  EXPECT_EQ(s.error_code(), StatusCode::UNAVAILABLE) << s.error_message();
}

TEST(Mtls, DeviceAndAdminRpcsNeedTheRightCertificate) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  EXPECT_TRUE(JoinAs(c, c.DeviceTls("dev-a"), "dev-a").ok());

  ClientTlsOptions server_only;
  server_only.ca_file = c.ca();
  grpc::Status anonymous = JoinAs(c, server_only, "dev-a");
  EXPECT_EQ(anonymous.error_code(), StatusCode::UNAUTHENTICATED);
  EXPECT_NE(anonymous.error_message().find("no client certificate"), std::string::npos);

  ClientTlsOptions plain;
  plain.insecure = true;
  EXPECT_EQ(JoinAs(c, plain, "dev-a").error_code(), StatusCode::UNAVAILABLE);

  grpc::Status impostor = JoinAs(c, c.DeviceTls("dev-a"), "dev-b");
  EXPECT_EQ(impostor.error_code(), StatusCode::PERMISSION_DENIED);
  EXPECT_NE(impostor.error_message().find("'dev-a'"), std::string::npos);

  Cluster other;  // a certificate from another CA fails the handshake
  EXPECT_EQ(JoinAs(c, other.DeviceTls("dev-a"), "dev-a").error_code(), StatusCode::UNAVAILABLE);

  auto as_device = v1::Admin::NewStub(*MakeChannel(c.address(), c.DeviceTls("dev-a"), 4 << 20));
  grpc::ClientContext ctx;
  v1::ListJobsResponse jobs;
  grpc::Status denied = as_device->ListJobs(&ctx, v1::ListJobsRequest(), &jobs);
  EXPECT_EQ(denied.error_code(), StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(JoinAs(c, c.AdminTls(), "admin").error_code(), StatusCode::PERMISSION_DENIED);

  auto unauthenticated = RunCommand({FLEETCTL_BIN, "--coordinator", c.address(), "--ca-cert",
                                     c.ca(), "job", "list"},
                                    c.dir());
  EXPECT_EQ(unauthenticated.exit_code, 1);
  EXPECT_NE(unauthenticated.output.find("admin certificate"), std::string::npos)
      << unauthenticated.output;
}

TEST(Mtls, OnlyTls13IsOffered) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  auto handshake = [&](const std::string& version) {
    return RunCommand({"/bin/sh", "-c",
                       "echo | openssl s_client -connect " + c.address() + " " + version +
                           " -alpn h2 -CAfile " + c.ca() + " 2>&1"},
                      c.dir(), std::chrono::seconds(20))
        .output;
  };
  std::string v12 = handshake("-tls1_2");
  EXPECT_EQ(v12.find("New, TLSv1.2"), std::string::npos) << v12;
  EXPECT_NE(v12.find("New, (NONE)"), std::string::npos) << v12;
  std::string v13 = handshake("-tls1_3");
  EXPECT_NE(v13.find("New, TLSv1.3"), std::string::npos) << v13;
}

TEST(Mtls, ExpiredCertificateIsRefusedOnEveryCall) {
  Cluster c;
  // The coordinator's certificate clock runs two hours ahead: a one-hour device certificate
  // that still passes the TLS handshake has expired by its reckoning.
  ASSERT_TRUE(c.StartCoordinator({"--clock-offset-s", "7200"})) << c.coordinator().Log();
  grpc::Status s = JoinAs(c, c.DeviceTls("dev-a", 3600), "dev-a");
  EXPECT_EQ(s.error_code(), StatusCode::UNAUTHENTICATED);
  EXPECT_NE(s.error_message().find("expired"), std::string::npos) << s.error_message();
  EXPECT_TRUE(JoinAs(c, c.DeviceTls("dev-b", 4 * 3600), "dev-b").ok());
}

TEST(Revocation, RevokedDeviceIsCutOffMidCallAndCannotEnrollAgain) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  ClientTlsOptions tls = c.DeviceTls("dev-a");
  ASSERT_TRUE(JoinAs(c, tls, "dev-a").ok());
  // A long poll is open when the revocation lands.
  auto stub = v1::Device::NewStub(*MakeChannel(c.address(), tls, 4 << 20));
  auto poll = std::async(std::launch::async, [&] {
    v1::FetchTaskRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_device_id("dev-a");
    req.set_wait_ms(25000);
    grpc::ClientContext ctx;
    v1::SignedTask task;
    auto started = std::chrono::steady_clock::now();
    grpc::Status s = stub->FetchTask(&ctx, req, &task);
    return std::make_pair(s, std::chrono::steady_clock::now() - started);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CommandResult r = c.Fleetctl({"device", "revoke", "dev-a"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("1 open calls closed"), std::string::npos) << r.output;
  auto [status, took] = poll.get();
  EXPECT_EQ(status.error_code(), StatusCode::CANCELLED);
  EXPECT_LT(took, std::chrono::seconds(5)) << "closed at once, not at the end of the poll";

  grpc::Status next = JoinAs(c, tls, "dev-a");
  EXPECT_EQ(next.error_code(), StatusCode::UNAUTHENTICATED);
  EXPECT_NE(next.error_message().find("revoked"), std::string::npos);
  EXPECT_EQ(Enroll(c, "dev-a", NewToken(c, "1")).error_code(), StatusCode::PERMISSION_DENIED);
  EXPECT_NE(c.Fleetctl({"device", "list"}).output.find("revoked"), std::string::npos);
  EXPECT_NE(Audit(c).find("\"event\":\"device_revoke\""), std::string::npos);
}

TEST(Revocation, RealClientStopsWithAClearLineWhenRevoked) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  Process& client = c.StartHarClient(3);
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() == 1; }, std::chrono::seconds(30)));
  ASSERT_EQ(c.Fleetctl({"device", "revoke", "har-subject-3"}).exit_code, 0);
  EXPECT_EQ(client.Wait(std::chrono::seconds(20)), 1) << client.Log();
  EXPECT_NE(client.Log().find("re-provision this device"), std::string::npos) << client.Log();
}

TEST(Renewal, ClientRenewsAtTwoThirdsOfItsLifetimeAndKeepsWorking) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator({"--device-cert-ttl", "9s"})) << c.coordinator().Log();
  Process& client = c.StartHarClient(5);
  ASSERT_TRUE(WaitFor([&] { return client.Log().find("enrolled:") != std::string::npos; },
                      std::chrono::seconds(30)))
      << client.Log();
  ASSERT_TRUE(WaitFor([&] { return client.Log().find("certificate renewed") != std::string::npos; },
                      std::chrono::seconds(30)))
      << client.Log();
  EXPECT_NE(Audit(c).find("\"event\":\"renew\""), std::string::npos);
  // Past the first certificate's expiry the device is still online on its renewed one.
  std::this_thread::sleep_for(std::chrono::seconds(4));
  EXPECT_EQ(c.OnlineDevices(), 1) << client.Log();
  EXPECT_TRUE(client.Running());
  auto job = c.Fleetctl({"job", "submit", "--watch", "-f",
                         c.WriteJob("after-renewal", 1, 1, 1,
                                    "secure_aggregation: {enabled: false}\n")});
  EXPECT_EQ(job.exit_code, 0) << job.output << client.Log();
}

TEST(Renewal, ExpiredCertificateReenrollsOnlyWhileTheTokenAllows) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator({"--device-cert-ttl", "3s"})) << c.coordinator().Log();
  auto bootstrap_with = [&](const std::string& token) {
    std::ofstream(c.bootstrap(), std::ios::trunc)
        << "coordinator: " << c.address() << "\nca_cert_file: " << c.ca() << "\ntoken: " << token
        << "\n";
  };
  bootstrap_with(NewToken(c, "1"));
  Process& first = c.StartHarClient(6);
  ASSERT_TRUE(WaitFor([&] { return first.Log().find("enrolled:") != std::string::npos; },
                      std::chrono::seconds(30)))
      << first.Log();
  first.Kill(SIGKILL);  // powered off before renewal (due 2 s in)
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));

  // Expired, and the single-use token is spent: a clear stop, exit 1.
  Process& second = c.StartHarClient(6);
  EXPECT_EQ(second.Wait(std::chrono::seconds(20)), 1) << second.Log();
  EXPECT_NE(second.Log().find("stored certificate unusable"), std::string::npos) << second.Log();
  EXPECT_NE(second.Log().find("no uses left; re-provision this device"), std::string::npos)
      << second.Log();

  // Re-provisioned with a fresh token: it enrolls again and joins.
  bootstrap_with(NewToken(c, "1"));
  Process& third = c.StartHarClient(6);
  ASSERT_TRUE(WaitFor([&] { return Count(third.Log(), "enrolled:") == 2; },
                      std::chrono::seconds(30)))
      << third.Log();
  EXPECT_TRUE(WaitFor([&] { return c.OnlineDevices() == 1; }, std::chrono::seconds(10)));
}

TEST(Audit, FleetctlVerifyReportsTheFirstBrokenLink) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  NewToken(c, "3");
  c.Fleetctl({"device", "revoke", "old-sensor"});
  const std::string path = c.dir() + "/coordinator/audit.log";
  CommandResult ok = c.Fleetctl({"audit", "verify", path});
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("intact, 3 records"), std::string::npos) << ok.output;
  // Every admin action names who did it.
  EXPECT_EQ(Count(Audit(c), "\"actor\":\"admin\""), 3);

  std::string text = Audit(c);
  size_t at = text.find("old-sensor");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 10, "new-sensor");
  std::ofstream(path, std::ios::trunc) << text;
  CommandResult broken = c.Fleetctl({"audit", "verify", path});
  EXPECT_EQ(broken.exit_code, 1);
  EXPECT_NE(broken.output.find("BROKEN at line 3"), std::string::npos) << broken.output;
}

}  // namespace
}  // namespace fleet::testing
