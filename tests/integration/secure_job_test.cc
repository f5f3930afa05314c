// Secure aggregation with real processes: LibTorch clients on UCI HAR, the coordinator over TLS,
// and clients that exit abruptly right before a chosen SecAgg+ step (--fault-exit-before).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <ctime>
#include <regex>
#include <thread>

#include "common/file_util.h"
#include "coordinator/authority.h"
#include "crypto/pki.h"
#include "harness.h"

namespace fleet::testing {
namespace {


// Seven clients; four exit at a different stage each (after AdvertiseKeys). Round 1 must still
// produce the sum of the five whose masked inputs arrived, and round 2 runs on the three left.
TEST(SecureJob, ClientsKilledAtEachStageStillYieldTheSurvivorsSum) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  const std::vector<std::string> faults = {"share_keys", "masked_input", "consistency", "unmask"};
  const std::vector<int> subjects = {1, 3, 5, 6, 7, 8, 11};
  std::vector<Process*> faulty;
  for (size_t i = 0; i < subjects.size(); ++i) {
    std::vector<std::string> extra;
    if (i < faults.size()) extra = {"--fault-exit-before", faults[i]};
    Process& p = c.StartHarClient(subjects[i], true, "", extra);
    if (i < faults.size()) faulty.push_back(&p);
  }
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() >= 7; }, std::chrono::seconds(60)));
  auto submit = c.Fleetctl(
      {"job", "submit", "--watch", "-f",
       c.WriteJob("it-secure-drop", 2, 3, 7,
                  "secure_aggregation: {neighbours: 6, threshold: 3, dropout_fraction: 0.6, "
                  "stage_timeout_s: 20}\n")});
  ASSERT_EQ(submit.exit_code, 0) << submit.output << c.coordinator().Log();
  std::string id = submit.output.substr(0, submit.output.find('\n'));
  auto get = c.Fleetctl({"-o", "json", "job", "get", id});
  EXPECT_NE(get.output.find("\"state\": \"SUCCEEDED\""), std::string::npos) << get.output;
  EXPECT_EQ(JsonInts(get.output, "participants"), (std::vector<int>{5, 3})) << get.output;
  EXPECT_EQ(JsonInts(get.output, "secagg_threshold"), (std::vector<int>{3, 3}));
  for (Process* p : faulty) EXPECT_EQ(p->Wait(std::chrono::seconds(5)), 3) << p->Log();
  std::string log = c.coordinator().Log();
  for (const char* stage : {"dropped out in ShareKeys", "dropped out in MaskedInputCollection",
                            "dropped out in ConsistencyCheck", "dropped out in Unmasking"}) {
    EXPECT_NE(log.find(stage), std::string::npos) << stage << "\n" << log;
  }
  auto table = c.Fleetctl({"job", "get", id});
  EXPECT_NE(table.output.find("secure agg:    on (SecAgg+)"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("k6,t3"), std::string::npos) << table.output;
}

// Two of four clients vanish at ConsistencyCheck: fewer than t = 3 holders remain, the round
// aborts with nothing unmasked, and the job records why.
TEST(SecureJob, BelowThresholdAbortsCleanlyAndRecordsWhy) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  for (int s : {1, 3}) c.StartHarClient(s, true, "", {"--fault-exit-before", "consistency"});
  for (int s : {5, 6}) c.StartHarClient(s);
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() >= 4; }, std::chrono::seconds(60)));
  auto submit = c.Fleetctl(
      {"job", "submit", "--watch", "-f",
       c.WriteJob("it-secure-abort", 2, 3, 4,
                  "max_round_retries: 0\nsecure_aggregation: {neighbours: 4, threshold: 3}\n")});
  EXPECT_EQ(submit.exit_code, 1) << submit.output;
  std::string id = submit.output.substr(0, submit.output.find('\n'));
  auto get = c.Fleetctl({"-o", "json", "job", "get", id});
  EXPECT_NE(get.output.find("\"state\": \"FAILED\""), std::string::npos) << get.output;
  EXPECT_NE(get.output.find("\"aborts\""), std::string::npos) << get.output;
  EXPECT_NE(get.output.find("below the threshold t=3"), std::string::npos) << get.output;
  EXPECT_NE(get.output.find("nothing was unmasked"), std::string::npos) << get.output;
  EXPECT_TRUE(JsonInts(get.output, "participants").empty());  // no round completed
  auto table = c.Fleetctl({"job", "get", id});
  EXPECT_NE(table.output.find("aborted round:  1"), std::string::npos) << table.output;
}

// Devices wait inside a SecAgg+ stage on a parked call, with no coordinator thread held. Three
// of four wait for ConsistencyCheck to close while the fourth hangs before it (stage timeout
// 120 s): stopping the job answers the three at once with the abort, and the coordinator then
// shuts down cleanly with the hung device still connected.
TEST(SecureJob, StoppingAJobAnswersDevicesWaitingInAStage) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  Process& hung = c.StartHarClient(1, true, "", {"--fault-hang-before", "consistency"});
  std::vector<Process*> waiting;
  for (int s : {3, 5, 6}) waiting.push_back(&c.StartHarClient(s));
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() >= 4; }, std::chrono::seconds(60)));
  auto submit = c.Fleetctl(
      {"job", "submit", "-f",
       c.WriteJob("it-secure-stop", 1, 4, 4,
                  "secure_aggregation: {neighbours: 4, threshold: 3, stage_timeout_s: 120}\n")});
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  std::string id = submit.output.substr(0, submit.output.find('\n'));
  ASSERT_TRUE(
      WaitFor([&] { return hung.Log().find("hanging before consistency") != std::string::npos; },
              std::chrono::seconds(120)))
      << hung.Log();
  std::this_thread::sleep_for(std::chrono::seconds(2));  // the others send theirs and wait
  const auto stopped = std::chrono::steady_clock::now();
  auto stop = c.Fleetctl({"job", "stop", id});
  ASSERT_EQ(stop.exit_code, 0) << stop.output;
  for (Process* p : waiting) {
    EXPECT_TRUE(WaitFor(
        [&] {
          return p->Log().find(
                     "aborted by the coordinator: in ConsistencyCheck: the job was "
                     "stopped") != std::string::npos;
        },
        std::chrono::seconds(20)))
        << p->Log();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - stopped, std::chrono::seconds(20));
  auto get = c.Fleetctl({"-o", "json", "job", "get", id});
  EXPECT_NE(get.output.find("\"state\": \"STOPPED\""), std::string::npos) << get.output;
  c.coordinator().Kill(SIGTERM);
  EXPECT_EQ(c.coordinator().Wait(std::chrono::seconds(15)), 0) << c.coordinator().Log();
}

// A device enrolled before certificates certified SecAgg signing keys: its stored certificate
// has no key. fleet-client says so, renews at once (before it joins) to get a certificate that
// certifies a new key, and then takes part in secure rounds like every other device.
TEST(SecureJob, DeviceWhoseCertificateCertifiesNoKeyRenewsThenTakesPart) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  // Subject 1's state dir as an older fleet-client left it.
  const std::string state = c.dir() + "/device-1";
  ASSERT_TRUE(MakeDirs(state).ok());
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  const std::string key = *crypto::GenerateP256Key();
  crypto::CertRequest req;
  req.public_key_pem = *crypto::PublicKeyOf(key);
  req.common_name = "har-subject-1";
  req.role = crypto::CertRole::kDevice;
  req.not_before = now - 300;
  req.not_after = now + 86400;
  const std::string legacy =
      *crypto::IssueCertificate(ReadAll(c.ca()), ReadAll(c.pki() + "/ca.key"), req);
  ASSERT_TRUE(crypto::ParseCertificate(legacy)->secagg_public_key.empty());
  auto authority = Authority::Load(c.state_dir());
  ASSERT_TRUE(authority.ok()) << authority.status().message();
  const crypto::Bytes32& model_key = (*authority)->model_key().public_key();
  ASSERT_TRUE(WriteFileAtomically(state + "/device.key", key, 0600).ok());
  ASSERT_TRUE(WriteFileAtomically(state + "/device.pem", legacy, 0600).ok());
  ASSERT_TRUE(WriteFileAtomically(state + "/ca.pem", ReadAll(c.ca()), 0600).ok());
  ASSERT_TRUE(WriteFileAtomically(state + "/model-signing.pub",
                                  crypto::ToHex(model_key.data(), model_key.size()) + "\n", 0600)
                  .ok());

  Process& old = c.StartHarClient(1);
  for (int s : {3, 5, 6}) c.StartHarClient(s);
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() >= 4; }, std::chrono::seconds(60)))
      << old.Log();
  auto submit = c.Fleetctl({"job", "submit", "--watch", "-f",
                            c.WriteJob("it-secure-legacy", 1, 4, 4,
                                       "secure_aggregation: {neighbours: 4, threshold: 3}\n")});
  ASSERT_EQ(submit.exit_code, 0) << submit.output << old.Log();
  std::string id = submit.output.substr(0, submit.output.find('\n'));
  auto get = c.Fleetctl({"-o", "json", "job", "get", id});
  EXPECT_NE(get.output.find("\"state\": \"SUCCEEDED\""), std::string::npos) << get.output;
  EXPECT_EQ(JsonInts(get.output, "participants"), (std::vector<int>{4})) << get.output;

  const std::string log = old.Log();
  EXPECT_NE(log.find("predates certified secure-aggregation keys"), std::string::npos) << log;
  EXPECT_NE(log.find("renewing the certificate now"), std::string::npos) << log;
  EXPECT_NE(log.find("certificate renewed"), std::string::npos) << log;
  EXPECT_LT(log.find("certificate renewed"), log.find("joined ")) << "renews before it joins";
  EXPECT_NE(log.find("securely aggregated"), std::string::npos) << log;
  // The renewed certificate certifies the key in the device's seed file (0600).
  auto renewed = crypto::ParseCertificate(ReadAll(state + "/device.pem"));
  ASSERT_TRUE(renewed.ok());
  EXPECT_NE(renewed->serial, crypto::ParseCertificate(legacy)->serial);
  crypto::Secret32 seed;
  ASSERT_TRUE(crypto::FromHex(ReadAll(state + "/secagg-signing.key"), seed.data(), seed.size()));
  EXPECT_EQ(renewed->secagg_public_key,
            crypto::ToString(crypto::SigningKey::FromSeed(seed).public_key()));
  struct stat st {};
  ASSERT_EQ(stat((state + "/secagg-signing.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

// Renewal rotates a device's SecAgg signing key with its certificate: the device joins again
// with both, so the coordinator relays the new certificate and key, and secure rounds go on.
TEST(SecureJob, DevicesThatRenewedTheirCertificatesStillTakePart) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator({"--device-cert-ttl", "15s"})) << c.coordinator().Log();
  std::vector<Process*> clients;
  for (int s : {1, 3, 5, 6}) clients.push_back(&c.StartHarClient(s));
  for (Process* p : clients) {
    ASSERT_TRUE(WaitFor([&] { return p->Log().find("certificate renewed") != std::string::npos; },
                        std::chrono::seconds(60)))
        << p->Log();
  }
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() >= 4; }, std::chrono::seconds(30)));
  auto submit = c.Fleetctl(
      {"job", "submit", "--watch", "-f",
       c.WriteJob("it-secure-renewed", 1, 4, 4,
                  "max_round_retries: 0\nsecure_aggregation: {neighbours: 4, threshold: 3}\n")});
  ASSERT_EQ(submit.exit_code, 0) << submit.output << c.coordinator().Log();
  std::string id = submit.output.substr(0, submit.output.find('\n'));
  auto get = c.Fleetctl({"-o", "json", "job", "get", id});
  EXPECT_NE(get.output.find("\"state\": \"SUCCEEDED\""), std::string::npos) << get.output;
  EXPECT_EQ(JsonInts(get.output, "participants"), (std::vector<int>{4})) << get.output;
  EXPECT_EQ(c.coordinator().Log().find("advertised signing key is not the one"), std::string::npos);
}

TEST(SecureJob, OptingOutIsExplicitAndShown) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  auto submit = c.Fleetctl({"job", "submit", "-f",
                            c.WriteJob("it-plain", 1, 3, 3,
                                       "secure_aggregation: {enabled: false}\n")});
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  std::string id = submit.output.substr(0, submit.output.find('\n'));
  auto table = c.Fleetctl({"job", "get", id});
  EXPECT_NE(table.output.find("secure agg:    OFF"), std::string::npos) << table.output;
}

// A device's own default: it sends its update only masked. A coordinator (or an admin's spec key)
// that switches secure aggregation off gets a decline naming the reason from each device, not
// their updates; a device whose config allows plain rounds trains in the same job.
TEST(SecureJob, DevicesRefusePlainRoundsUnlessTheirConfigAllowsThem) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  c.set_allow_plain_rounds(false);
  std::vector<Process*> refusing;
  for (int s : {1, 3}) refusing.push_back(&c.StartHarClient(s));
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() >= 2; }, std::chrono::seconds(60)));
  auto submit = c.Fleetctl({"job", "submit", "-f",
                            c.WriteJob("it-plain-refused", 1, 2, 2,
                                       "max_round_retries: 0\n"
                                       "secure_aggregation: {enabled: false}\n")});
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  const std::string id = submit.output.substr(0, submit.output.find('\n'));
  auto watch = c.Fleetctl({"job", "watch", id});
  EXPECT_EQ(watch.exit_code, 1) << watch.output << c.coordinator().Log();
  const std::string reason = "refusing a plain training round: job " + id +
                             " has secure aggregation off, and this device sends its update "
                             "only masked (its config's allow_plain_rounds: true would allow it)";
  for (size_t i = 0; i < refusing.size(); ++i) {
    EXPECT_NE(refusing[i]->Log().find(reason), std::string::npos) << refusing[i]->Log();
    EXPECT_EQ(refusing[i]->Log().find("allow_plain_rounds: this device trains"), std::string::npos);
  }
  EXPECT_NE(c.coordinator().Log().find("could not train: " + reason), std::string::npos)
      << c.coordinator().Log();
  auto json = c.Fleetctl({"-o", "json", "job", "get", id});
  EXPECT_NE(json.output.find("\"state\": \"FAILED\""), std::string::npos) << json.output;
  EXPECT_TRUE(JsonInts(json.output, "participants").empty()) << json.output;

  // Devices that opt in (warned at start) train in a plain job.
  c.set_allow_plain_rounds(true);
  std::vector<Process*> allowing;
  for (int s : {5, 6}) {
    c.set_client_config_extra(s, "labels: {plain: allowed}\n");
    allowing.push_back(&c.StartHarClient(s));
  }
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() >= 4; }, std::chrono::seconds(60)));
  for (Process* p : allowing) {
    EXPECT_TRUE(WaitFor(
        [&] {
          return p->Log().find(
                     "allow_plain_rounds: this device trains in jobs with secure "
                     "aggregation off") != std::string::npos;
        },
        std::chrono::seconds(10)))
        << p->Log();
  }
  auto plain = c.Fleetctl({"job", "submit", "--watch", "-f",
                           c.WriteJob("it-plain-allowed", 1, 2, 2,
                                      "selection: {labels: {plain: allowed}}\n"
                                      "secure_aggregation: {enabled: false}\n")});
  EXPECT_EQ(plain.exit_code, 0) << plain.output << c.coordinator().Log();
}

}  // namespace
}  // namespace fleet::testing
