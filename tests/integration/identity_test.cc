// A bootstrap token cannot take over another device's identity (issue 16 item 2) and the
// enrollment service, reachable without a certificate, is bounded (item 4): token bindings, one
// current certificate per device id (enrollment refused while one is valid, renewal and
// `fleetctl device reset` retire the old one), request size and per-peer rate limits, and
// refused enrollments coalesced in the audit log. Real coordinator, fleetctl and fleet-client
// processes.
#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <set>
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

std::string TokenFrom(const CommandResult& r) {
  size_t at = r.output.find("fleet1_");
  return at == std::string::npos ? "" : r.output.substr(at, r.output.find('\n', at) - at);
}

std::string NewToken(Cluster& c, const std::vector<std::string>& flags = {}) {
  std::vector<std::string> args{"token", "create", "--uses", "5", "--ttl", "1h"};
  args.insert(args.end(), flags.begin(), flags.end());
  CommandResult r = c.Fleetctl(args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return TokenFrom(r);
}

std::string Audit(Cluster& c) { return ReadAll(c.state_dir() + "/audit.log"); }

// The audit records of `event`, parsed.
std::vector<nlohmann::json> AuditRecords(Cluster& c, const std::string& event) {
  std::vector<nlohmann::json> out;
  std::istringstream in(Audit(c));
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("event", "") == event) out.push_back(std::move(j));
  }
  return out;
}

uint32_t UsesLeft(Cluster& c, const std::string& token) {
  // fleetctl -o json prints each token as an indented object, fields in proto order.
  const std::string json = c.Fleetctl({"-o", "json", "token", "list"}).output;
  const size_t at = json.find("\"id\": \"" + token.substr(7, 16) + "\"");
  if (at == std::string::npos) return 1000000;
  const size_t end = json.find('}', at);
  std::vector<int> left = JsonInts(json.substr(at, end - at), "uses_left");
  return left.empty() ? 0 : static_cast<uint32_t>(left[0]);
}

ClientTlsOptions ServerOnly(Cluster& c) {
  ClientTlsOptions tls;
  tls.ca_pem = ReadAll(c.ca());
  return tls;
}

// Enrolls `id` as a device does; on success *tls holds mTLS options with the new certificate.
grpc::Status Enroll(Cluster& c, const std::string& id, const std::string& token,
                    ClientTlsOptions* tls = nullptr, grpc::ClientContext* ctx_out = nullptr) {
  auto stub = v1::Enrollment::NewStub(*MakeChannel(c.address(), ServerOnly(c), 4 << 20));
  const std::string key = *crypto::GenerateP256Key();
  v1::EnrollRequest req = MakeEnrollRequest(
      id, token,
      *crypto::MakeCsr(key, id, crypto::ToString(crypto::SigningKey::Generate().public_key())));
  grpc::ClientContext local;
  grpc::ClientContext& ctx = ctx_out ? *ctx_out : local;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::EnrollResponse resp;
  grpc::Status s = stub->Enroll(&ctx, req, &resp);
  if (s.ok() && tls) {
    *tls = ServerOnly(c);
    tls->key_pem = key;
    tls->cert_pem = resp.certificate_pem();
  }
  return s;
}

// Renews over mTLS with `tls`; on success *renewed holds the new certificate.
grpc::Status Renew(Cluster& c, const ClientTlsOptions& tls, const std::string& id,
                   ClientTlsOptions* renewed = nullptr,
                   const crypto::SigningKey* secagg = nullptr) {
  auto stub = v1::Device::NewStub(*MakeChannel(c.address(), tls, 4 << 20));
  const std::string key = *crypto::GenerateP256Key();
  const crypto::SigningKey throwaway = crypto::SigningKey::Generate();
  v1::RenewRequest req = MakeRenewRequest(
      id, *crypto::MakeCsr(key, id, crypto::ToString((secagg ? *secagg : throwaway).public_key())),
      tls);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::EnrollResponse resp;
  grpc::Status s = stub->Renew(&ctx, req, &resp);
  if (s.ok() && renewed) {
    *renewed = tls;
    renewed->key_pem = key;
    renewed->cert_pem = resp.certificate_pem();
  }
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

std::string Serial(const ClientTlsOptions& tls) {
  return crypto::ParseCertificate(tls.cert_pem)->serial;
}

TEST(Identity, ATokenBoundToADeviceIdEnrollsNothingElse) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  const std::string token = NewToken(c, {"--device-id", "ward3-bed-12"});
  ASSERT_FALSE(token.empty());

  grpc::Status other = Enroll(c, "sensor-17", token);
  EXPECT_EQ(other.error_code(), StatusCode::PERMISSION_DENIED) << other.error_message();
  EXPECT_NE(other.error_message().find("is bound to device 'ward3-bed-12' and cannot enroll "
                                       "'sensor-17'"),
            std::string::npos)
      << other.error_message();
  EXPECT_EQ(UsesLeft(c, token), 5u) << "a refused enrollment spends nothing";
  EXPECT_TRUE(Enroll(c, "ward3-bed-12", token).ok());
  EXPECT_EQ(UsesLeft(c, token), 4u);

  CommandResult list = c.Fleetctl({"token", "list"});
  EXPECT_NE(list.output.find("device ward3-bed-12"), std::string::npos) << list.output;
  const auto created = AuditRecords(c, "token_create");
  ASSERT_FALSE(created.empty());
  EXPECT_EQ(created.back().value("device_id", ""), "ward3-bed-12") << created.back().dump();
  bool refused = false;
  for (const auto& r : AuditRecords(c, "enroll_refused")) {
    refused |= r.value("reason", "") == "token bound to another device id" &&
               r.value("actor", "") == "sensor-17";
  }
  EXPECT_TRUE(refused) << Audit(c);

  // The binding flags are exclusive and validated like device ids (usage errors, exit 2).
  EXPECT_EQ(c.Fleetctl({"token", "create", "--device-id", "a", "--id-prefix", "b"}).exit_code, 2);
  CommandResult bad = c.Fleetctl({"token", "create", "--device-id", "ward 3"});
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("--device-id 'ward 3'"), std::string::npos) << bad.output;
}

TEST(Identity, ATokenBoundToAnIdPrefixEnrollsOnlyIdsWithIt) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  const std::string token = NewToken(c, {"--id-prefix", "ward3-"});
  EXPECT_TRUE(Enroll(c, "ward3-bed-1", token).ok());
  EXPECT_TRUE(Enroll(c, "ward3-bed-2", token).ok());
  for (const char* id : {"ward4-bed-1", "ward3", "xward3-bed-1"}) {
    grpc::Status s = Enroll(c, id, token);
    EXPECT_EQ(s.error_code(), StatusCode::PERMISSION_DENIED) << id;
    EXPECT_NE(s.error_message().find("start with 'ward3-'"), std::string::npos)
        << s.error_message();
  }
  EXPECT_EQ(UsesLeft(c, token), 3u);
  EXPECT_NE(c.Fleetctl({"token", "list"}).output.find("ids ward3-*"), std::string::npos);
  EXPECT_EQ(AuditRecords(c, "token_create").back().value("id_prefix", ""), "ward3-");
}

// A token holder cannot enroll under the id of a device that has a valid certificate (and so
// cannot replace its certificate and SecAgg key); the device itself notices nothing.
TEST(Identity, AnIdWithAValidCertificateCannotBeEnrolledAgainAndItsDeviceKeepsWorking) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  Process& victim = c.StartHarClient(1);
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() == 1; }, std::chrono::seconds(30)))
      << victim.Log();
  const std::string token = NewToken(c);
  grpc::Status s = Enroll(c, "har-subject-1", token);
  EXPECT_EQ(s.error_code(), StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_NE(s.error_message().find("already has a valid certificate"), std::string::npos)
      << s.error_message();
  EXPECT_NE(s.error_message().find("use Renew"), std::string::npos) << s.error_message();
  EXPECT_NE(s.error_message().find("`fleetctl device reset har-subject-1`"), std::string::npos)
      << s.error_message();
  EXPECT_EQ(UsesLeft(c, token), 5u);
  bool refused = false;
  for (const auto& r : AuditRecords(c, "enroll_refused")) {
    refused |= r.value("reason", "") == "device has a valid certificate";
  }
  EXPECT_TRUE(refused) << Audit(c);

  auto job = c.Fleetctl({"job", "submit", "--watch", "-f",
                         c.WriteJob("victim", 1, 1, 1, "secure_aggregation: {enabled: false}\n")});
  EXPECT_EQ(job.exit_code, 0) << job.output << victim.Log();
  EXPECT_EQ(victim.Log().find("refused this device's certificate"), std::string::npos)
      << victim.Log();
  EXPECT_EQ(Count(Audit(c), "\"event\":\"enroll\""), 1);
}

TEST(Identity, DeviceResetRetiresTheCertificateAtOnceAndTheDeviceMayEnrollAgain) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  const std::string token = NewToken(c);
  ClientTlsOptions old_tls;
  ASSERT_TRUE(Enroll(c, "sensor-9", token, &old_tls).ok());
  ASSERT_TRUE(JoinAs(c, old_tls, "sensor-9").ok());
  EXPECT_EQ(Enroll(c, "sensor-9", token).error_code(), StatusCode::FAILED_PRECONDITION);

  auto stub = v1::Device::NewStub(*MakeChannel(c.address(), old_tls, 4 << 20));
  auto poll = std::async(std::launch::async, [&] {
    v1::FetchTaskRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_device_id("sensor-9");
    req.set_wait_ms(25000);
    grpc::ClientContext ctx;
    v1::SignedTask task;
    auto started = std::chrono::steady_clock::now();
    grpc::Status s = stub->FetchTask(&ctx, req, &task);
    return std::make_pair(s, std::chrono::steady_clock::now() - started);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CommandResult r = c.Fleetctl({"device", "reset", "sensor-9"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("certificate " + Serial(old_tls) + " no longer accepted"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("1 open calls closed"), std::string::npos) << r.output;
  auto [status, took] = poll.get();
  EXPECT_EQ(status.error_code(), StatusCode::CANCELLED);
  EXPECT_LT(took, std::chrono::seconds(5));

  grpc::Status next = JoinAs(c, old_tls, "sensor-9");
  EXPECT_EQ(next.error_code(), StatusCode::UNAUTHENTICATED);
  EXPECT_NE(next.error_message().find("retired by `fleetctl device reset`"), std::string::npos)
      << next.error_message();
  const auto resets = AuditRecords(c, "device_reset");
  ASSERT_EQ(resets.size(), 1u) << Audit(c);
  EXPECT_EQ(resets[0].value("forgotten_serial", ""), Serial(old_tls));
  EXPECT_EQ(resets[0].value("actor", ""), "admin");

  ClientTlsOptions new_tls;
  ASSERT_TRUE(Enroll(c, "sensor-9", token, &new_tls).ok());
  EXPECT_TRUE(JoinAs(c, new_tls, "sensor-9").ok());
  EXPECT_EQ(JoinAs(c, old_tls, "sensor-9").error_code(), StatusCode::UNAUTHENTICATED);

  // Recorded durably: after a restart the old certificate is still refused.
  c.coordinator().Kill(SIGKILL);
  ASSERT_TRUE(c.StartCoordinator({}, c.port())) << c.coordinator().Log();
  EXPECT_EQ(JoinAs(c, old_tls, "sensor-9").error_code(), StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(JoinAs(c, new_tls, "sensor-9").ok());

  // Unlike a reset, a revocation bars the id for good; a reset does not lift it.
  ASSERT_EQ(c.Fleetctl({"device", "revoke", "sensor-9"}).exit_code, 0);
  CommandResult revoked = c.Fleetctl({"device", "reset", "sensor-9"});
  EXPECT_EQ(revoked.exit_code, 1) << revoked.output;
  EXPECT_NE(revoked.output.find("a reset does not lift a revocation"), std::string::npos)
      << revoked.output;
}

// A real device whose certificate was reset enrolls again with its bootstrap token and carries
// on.
TEST(Identity, RealClientEnrollsAgainAfterAReset) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  Process& client = c.StartHarClient(3);
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() == 1; }, std::chrono::seconds(30)))
      << client.Log();
  ASSERT_EQ(c.Fleetctl({"device", "reset", "har-subject-3"}).exit_code, 0);
  ASSERT_TRUE(WaitFor([&] { return client.Log().find("enrolled again") != std::string::npos; },
                      std::chrono::seconds(30)))
      << client.Log();
  EXPECT_NE(client.Log().find("retired by `fleetctl device reset`"), std::string::npos)
      << client.Log();
  EXPECT_TRUE(WaitFor([&] { return c.OnlineDevices() == 1; }, std::chrono::seconds(20)));
  EXPECT_EQ(Count(Audit(c), "\"event\":\"enroll\""), 2);
}

TEST(Identity, ARenewalRetiresThePreviousCertificate) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  ClientTlsOptions first, second;
  ASSERT_TRUE(Enroll(c, "sensor-5", NewToken(c), &first).ok());
  ASSERT_TRUE(JoinAs(c, first, "sensor-5").ok());
  ASSERT_TRUE(Renew(c, first, "sensor-5", &second).ok());
  grpc::Status old = JoinAs(c, first, "sensor-5");
  EXPECT_EQ(old.error_code(), StatusCode::UNAUTHENTICATED);
  EXPECT_NE(old.error_message().find("is no longer this device's certificate"), std::string::npos)
      << old.error_message();
  EXPECT_TRUE(JoinAs(c, second, "sensor-5").ok());
  EXPECT_EQ(Renew(c, first, "sensor-5").error_code(), StatusCode::UNAUTHENTICATED);
  const auto renewals = AuditRecords(c, "renew");
  ASSERT_EQ(renewals.size(), 1u);
  EXPECT_EQ(renewals[0].value("replaces", ""), Serial(first));
  EXPECT_EQ(renewals[0].value("serial", ""), Serial(second));
}

// Raw bytes to Enrollment/Enroll, as anyone on the network can send them.
grpc::Status RawEnroll(Cluster& c, const std::string& bytes) {
  grpc::GenericStub stub(*MakeChannel(c.address(), ServerOnly(c), 8 << 20));
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1), response;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/fleet.v1.Enrollment/Enroll", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) { done.set_value(std::move(s)); });
  return done.get_future().get();
}

TEST(EnrollmentLimits, OversizedAndGarbageRequestsAreRefusedWithoutSpendingTokens) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  const std::string token = NewToken(c);
  auto request = [&](const std::string& padding, const std::string& csr) {
    v1::EnrollRequest req = MakeEnrollRequest("sensor-1", token, csr);
    req.set_token_id(req.token_id() + padding);
    return req.SerializeAsString();
  };
  const std::string csr =
      *crypto::MakeCsr(*crypto::GenerateP256Key(), "sensor-1",
                       crypto::ToString(crypto::SigningKey::Generate().public_key()));
  v1::EnrollRequest old_version = MakeEnrollRequest("sensor-1", token, csr);
  old_version.set_protocol_version(kProtocolVersion - 1);
  // A v2 device sent the token itself, in field 3.
  old_version.GetReflection()->MutableUnknownFields(&old_version)->AddLengthDelimited(3, token);
  struct Case {
    std::string bytes;
    StatusCode code;
    std::string says;
  };
  const std::vector<Case> cases = {
      {request(std::string(20000, 'a'), csr), StatusCode::INVALID_ARGUMENT,
       "exceeds the limit of 16384 (refused unparsed)"},
      {request("", std::string(1 << 20, 'Q')), StatusCode::INVALID_ARGUMENT,
       "exceeds the limit of 16384"},
      {request("", csr + std::string(16385, ' ')), StatusCode::INVALID_ARGUMENT,
       "exceeds the limit of 16384"},
      {std::string(16385, '\x01'), StatusCode::INVALID_ARGUMENT, "exceeds the limit"},
      {std::string("\xff\xff\xff\xff\xff", 5), StatusCode::INVALID_ARGUMENT,
       "malformed EnrollRequest"},
      {std::string("\x1a\x10sho", 5), StatusCode::INVALID_ARGUMENT, "malformed EnrollRequest"},
      {std::string("\x12\xff\xff\xff\xff\x0f", 6), StatusCode::INVALID_ARGUMENT,
       "malformed EnrollRequest"},
      {old_version.SerializeAsString(), StatusCode::FAILED_PRECONDITION,
       "protocol version mismatch"},
  };
  for (const Case& k : cases) {
    grpc::Status s = RawEnroll(c, k.bytes);
    EXPECT_EQ(s.error_code(), k.code) << k.bytes.size() << " bytes: " << s.error_message();
    EXPECT_NE(s.error_message().find(k.says), std::string::npos) << s.error_message();
  }
  EXPECT_TRUE(c.coordinator().Running());
  EXPECT_EQ(UsesLeft(c, token), 5u) << "no token use was spent";
  EXPECT_TRUE(Enroll(c, "sensor-1", token).ok());
  EXPECT_EQ(UsesLeft(c, token), 4u);
  std::set<std::string> reasons;
  for (const auto& r : AuditRecords(c, "enroll_refused")) reasons.insert(r.value("reason", ""));
  EXPECT_TRUE(reasons.count("request too large")) << Audit(c);
  EXPECT_TRUE(reasons.count("malformed request")) << Audit(c);
  EXPECT_EQ(Audit(c).find(token.substr(24)), std::string::npos) << "token secrets never logged";
  EXPECT_EQ(c.coordinator().Log().find(token.substr(24)), std::string::npos);
}

TEST(EnrollmentLimits, APeerOverTheRateLimitIsToldWhenToRetryAndRecovers) {
  Cluster c;
  // Three at once, then one every 15 s.
  ASSERT_TRUE(c.StartCoordinator({"--enroll-burst", "3", "--enroll-rate-per-minute", "4"}))
      << c.coordinator().Log();
  const std::string bad = "fleet1_0123456789abcdef_" + std::string(64, 'a');
  int refused = 0, limited = 0;
  int64_t hint_ms = -1;
  for (int i = 0; i < 6; ++i) {
    grpc::ClientContext ctx;
    grpc::Status s = Enroll(c, "sensor-1", bad, nullptr, &ctx);
    if (s.error_code() == StatusCode::UNAUTHENTICATED) ++refused;
    if (s.error_code() == StatusCode::RESOURCE_EXHAUSTED) {
      ++limited;
      EXPECT_NE(s.error_message().find("too many enrollment requests from 127.0.0.1: retry in"),
                std::string::npos)
          << s.error_message();
      auto hint = ctx.GetServerTrailingMetadata().find("fleet-retry-after-ms");
      ASSERT_NE(hint, ctx.GetServerTrailingMetadata().end());
      hint_ms = std::stoll(std::string(hint->second.data(), hint->second.size()));
    }
  }
  EXPECT_EQ(refused, 3);
  EXPECT_EQ(limited, 3);
  EXPECT_GT(hint_ms, 10000);
  EXPECT_LE(hint_ms, 15000);
  std::this_thread::sleep_for(std::chrono::milliseconds(hint_ms + 100));
  EXPECT_EQ(Enroll(c, "sensor-1", bad).error_code(), StatusCode::UNAUTHENTICATED) << "recovered";
  bool audited = false;
  for (const auto& r : AuditRecords(c, "enroll_refused")) {
    audited |= r.value("reason", "") == "rate limited" && r.value("peer", "") == "127.0.0.1";
  }
  EXPECT_TRUE(audited) << Audit(c);

  // A real device runs into the limit, waits as told and enrolls. Until it starts enrolling
  // (its start-up time varies with the machine's load) the bucket is kept empty.
  std::atomic<bool> starting{true};
  std::thread drain([&] {
    while (starting) {
      Enroll(c, "sensor-1", bad);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  Process& client = c.StartHarClient(5);
  WaitFor([&] { return client.Log().find("enrolling with") != std::string::npos; },
          std::chrono::seconds(60));
  starting = false;
  drain.join();
  EXPECT_TRUE(WaitFor(
      [&] { return client.Log().find("too many enrollment requests") != std::string::npos; },
      std::chrono::seconds(10)))
      << client.Log();
  EXPECT_TRUE(WaitFor([&] { return c.OnlineDevices() == 1; }, std::chrono::seconds(40)))
      << client.Log();
  EXPECT_TRUE(client.Running()) << client.Log();
}

TEST(EnrollmentLimits, RefusedEnrollmentsAreCoalescedInTheAuditLog) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator({"--enroll-audit-interval-s", "2"})) << c.coordinator().Log();
  // One channel, so that the 30 requests fit well inside one interval.
  auto stub = v1::Enrollment::NewStub(*MakeChannel(c.address(), ServerOnly(c), 4 << 20));
  std::vector<v1::EnrollRequest> requests;
  for (int i = 0; i < 30; ++i) {
    const std::string id = "sensor-" + std::to_string(i);
    requests.push_back(MakeEnrollRequest(
        id, "fleet1_0123456789abcdef_" + std::string(64, 'a'),
        *crypto::MakeCsr(*crypto::GenerateP256Key(), id,
                         crypto::ToString(crypto::SigningKey::Generate().public_key()))));
  }
  const auto start = std::chrono::steady_clock::now();
  for (const v1::EnrollRequest& req : requests) {
    grpc::ClientContext ctx;
    v1::EnrollResponse resp;
    ASSERT_EQ(stub->Enroll(&ctx, req, &resp).error_code(), StatusCode::UNAUTHENTICATED);
  }
  auto refusals = [&] {
    std::vector<nlohmann::json> out;
    for (auto& r : AuditRecords(c, "enroll_refused")) {
      if (r.value("reason", "") == "unknown token") out.push_back(std::move(r));
    }
    return out;
  };
  // The first refusal is on record at once; the rest wait for the end of the interval.
  if (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(1800)) {
    const auto early = refusals();
    ASSERT_EQ(early.size(), 1u) << Audit(c);
    EXPECT_EQ(early[0].value("count", 0), 1);
    EXPECT_EQ(early[0].value("peer", ""), "127.0.0.1");
  }
  ASSERT_TRUE(WaitFor([&] { return refusals().size() == 2; }, std::chrono::seconds(10)))
      << Audit(c);
  const auto all = refusals();
  EXPECT_EQ(all[0].value("count", 0) + all[1].value("count", 0), 30) << Audit(c);
  EXPECT_EQ(all[1].value("count", 0), 29);
  EXPECT_EQ(all[1]["token_ids"], nlohmann::json::array({"0123456789abcdef"}));
  EXPECT_LE(all[1]["device_ids"].size(), 5u);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_EQ(refusals().size(), 2u) << "nothing more to record";
}

// A refused enrollment is audited with the id it named, cut to 128 bytes. An id whose 128th byte
// falls inside a UTF-8 sequence made the audit record invalid UTF-8, the JSON encoder threw, and
// the coordinator died: one request from anyone on the network, no token needed.
TEST(EnrollmentLimits, AnIdCutInsideAUtf8SequenceIsAuditedNotACrash) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  auto stub = v1::Enrollment::NewStub(*MakeChannel(c.address(), ServerOnly(c), 4 << 20));
  const std::string id = std::string(127, 'a') + "\xc3\xa9";  // e-acute across byte 128
  v1::EnrollRequest req = MakeEnrollRequest(
      "sensor-1", "fleet1_0123456789abcdef_" + std::string(64, 'a'),
      *crypto::MakeCsr(*crypto::GenerateP256Key(), "sensor-1",
                       crypto::ToString(crypto::SigningKey::Generate().public_key())));
  req.set_device_id(id);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::EnrollResponse resp;
  grpc::Status s = stub->Enroll(&ctx, req, &resp);
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(
      WaitFor([&] { return !AuditRecords(c, "enroll_refused").empty(); }, std::chrono::seconds(10)))
      << Audit(c) << c.coordinator().Log();
  ASSERT_TRUE(c.coordinator().Running()) << c.coordinator().Log();
  auto records = AuditRecords(c, "enroll_refused");
  ASSERT_FALSE(records.empty());
  EXPECT_NE(records[0].dump().find(std::string(127, 'a')), std::string::npos) << records[0].dump();
  auto verify = c.Fleetctl(
      {"audit", "verify", c.state_dir() + "/audit.log", "--key", c.state_dir() + "/pki/audit.key"});
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  auto list = c.Fleetctl({"device", "list"});  // still answering
  EXPECT_EQ(list.exit_code, 0) << list.output;
}

}  // namespace
}  // namespace fleet::testing
