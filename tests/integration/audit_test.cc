// The audit trail against a real coordinator (issue 16, item 5): a truncated or rewritten log
// stops the coordinator at start with what to do, a crash between appending and recording the
// head is repaired, `fleetctl audit verify` exit codes, and the events that fail closed (or,
// for revocation, fail safe) when their record cannot be written. Appends are made to fail with
// the failpoint audit.append_fail.EVENT (common/failpoint.h), as a write error would.
#include <gtest/gtest.h>
#include <sodium.h>
#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/grpc_util.h"
#include "crypto/keys.h"
#include "crypto/pki.h"
#include "harness.h"
#include "proto/fleet.grpc.pb.h"

namespace fleet::testing {
namespace {

struct ScopedFailpoint {
  explicit ScopedFailpoint(const std::string& spec) { setenv("FLEET_FAILPOINTS", spec.c_str(), 1); }
  ~ScopedFailpoint() { unsetenv("FLEET_FAILPOINTS"); }
};

std::vector<std::string> Lines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

void WriteLines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream out(path, std::ios::trunc);
  for (const auto& l : lines) out << l << "\n";
}

std::string ChainHash(const std::string& prev, nlohmann::json j) {
  j.erase("hash");
  j.erase("mac");
  const std::string input = prev + "\n" + j.dump();
  unsigned char h[32];
  crypto_generichash(h, sizeof h, reinterpret_cast<const unsigned char*>(input.data()),
                     input.size(), nullptr, 0);
  char hex[65];
  sodium_bin2hex(hex, sizeof hex, h, sizeof h);
  return hex;
}

class AuditCluster : public Cluster {
 public:
  std::string log() const { return state_dir() + "/audit.log"; }
  std::string key() const { return pki() + "/audit.key"; }
  std::string db() const { return state_dir() + "/coordinator.db"; }
  CommandResult Verify(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"audit", "verify", log()};
    args.insert(args.end(), extra.begin(), extra.end());
    return Fleetctl(args);
  }
  CommandResult Coordinator(std::vector<std::string> args) {
    args.insert(args.begin(), FLEET_COORDINATOR_BIN);
    return RunCommand(args, dir());
  }
  void Stop() {
    coordinator().Kill(SIGTERM);
    EXPECT_EQ(coordinator().Wait(std::chrono::seconds(20)), 0) << coordinator().Log();
  }
  // Starting must fail: the process exits 1 and its log names the problem and the way out.
  void ExpectRefusedStart(const std::string& why) {
    CommandResult r = Coordinator({"--listen", "127.0.0.1:0", "--state-dir", state_dir()});
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(why), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("fleet-coordinator audit-reset --state-dir"), std::string::npos)
        << r.output;
  }
};

std::string NewToken(Cluster& c) {
  CommandResult r = c.Fleetctl({"token", "create", "--uses", "1"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return r.output;
}

TEST(AuditTrail, StartRefusesATruncatedLogAndAuditResetStartsANewChain) {
  AuditCluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  NewToken(c);
  NewToken(c);
  c.Stop();
  CommandResult good = c.Verify({"--key", c.key(), "--db", c.db()});
  EXPECT_EQ(good.exit_code, 0) << good.output;
  EXPECT_NE(good.output.find("intact, 3 records"), std::string::npos) << good.output;
  EXPECT_NE(good.output.find("3 MACs verified; matches the database's recorded head"),
            std::string::npos)
      << good.output;

  // The last record cut off: the rest is still a valid chain, and valid MACs.
  auto lines = Lines(c.log());
  ASSERT_EQ(lines.size(), 3u);
  WriteLines(c.log(), {lines[0], lines[1]});
  CommandResult chain_only = c.Verify({"--key", c.key()});
  EXPECT_EQ(chain_only.exit_code, 0) << chain_only.output;
  CommandResult cut = c.Verify({"--key", c.key(), "--db", c.db()});
  EXPECT_EQ(cut.exit_code, 1) << cut.output;
  EXPECT_NE(cut.output.find("TRUNCATED: the log ends at record 2"), std::string::npos)
      << cut.output;
  EXPECT_NE(cut.output.find("records 3..3 were removed"), std::string::npos) << cut.output;
  c.ExpectRefusedStart("records 3..3 were removed");

  // The operator starts a new chain on purpose; the old file stays as evidence.
  CommandResult no_reason = c.Coordinator({"audit-reset", "--state-dir", c.state_dir()});
  EXPECT_EQ(no_reason.exit_code, 2) << no_reason.output;
  CommandResult reset = c.Coordinator(
      {"audit-reset", "--state-dir", c.state_dir(), "--reason", "restored /var from backup"});
  ASSERT_EQ(reset.exit_code, 0) << reset.output;
  EXPECT_NE(reset.output.find("moved the old log to"), std::string::npos) << reset.output;
  ASSERT_TRUE(c.StartCoordinator({}, c.port())) << c.coordinator().Log();
  auto fresh = Lines(c.log());
  ASSERT_GE(fresh.size(), 1u);
  auto first = nlohmann::json::parse(fresh[0]);
  EXPECT_EQ(first["event"], "audit_reset");
  EXPECT_EQ(first["reason"], "restored /var from backup");
  EXPECT_EQ(first["recorded_head_seq"], 3);
  const std::string moved = first["replaced_file"];
  EXPECT_EQ(Lines(moved).size(), 2u);
  NewToken(c);
  EXPECT_EQ(c.Verify({"--key", c.key(), "--db", c.db()}).exit_code, 0);
}

TEST(AuditTrail, ARewrittenRecordWithRecomputedHashesStopsTheCoordinator) {
  AuditCluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  NewToken(c);
  NewToken(c);
  c.Stop();
  // Without the key, an attacker edits record 2 and recomputes the chain after it.
  auto lines = Lines(c.log());
  std::string prev;
  for (size_t i = 0; i < lines.size(); ++i) {
    auto j = nlohmann::json::parse(lines[i]);
    if (i == 1) j["uses"] = 1000000;
    if (i >= 1) {
      j["prev"] = prev;
      j["hash"] = ChainHash(prev, j);
      lines[i] = j.dump();
    }
    prev = j["hash"];
  }
  WriteLines(c.log(), lines);
  CommandResult chain_only = c.Verify();
  EXPECT_EQ(chain_only.exit_code, 0) << "the unkeyed chain links: " << chain_only.output;
  EXPECT_NE(chain_only.output.find("MACs not checked"), std::string::npos) << chain_only.output;
  CommandResult keyed = c.Verify({"--key", c.key()});
  EXPECT_EQ(keyed.exit_code, 1) << keyed.output;
  EXPECT_NE(keyed.output.find("BROKEN at line 2: MAC does not verify"), std::string::npos)
      << keyed.output;
  c.ExpectRefusedStart("broken at line 2: MAC does not verify");
}

TEST(AuditTrail, FleetctlVerifyExitCodes) {
  AuditCluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  NewToken(c);
  // The head, to be kept off the host.
  CommandResult json = c.Fleetctl({"-o", "json", "audit", "verify", c.log(), "--key", c.key()});
  ASSERT_EQ(json.exit_code, 0) << json.output;
  auto j = nlohmann::json::parse(json.output);
  EXPECT_EQ(j["ok"], true);
  EXPECT_EQ(j["head_seq"], 2);
  EXPECT_EQ(j["macs_verified"], 2);
  const std::string head = j["head_hash"];
  NewToken(c);  // the log moves on: an older kept head is still a prefix of it

  EXPECT_EQ(c.Verify({"--expect-seq", "2", "--expect-head", head}).exit_code, 0);
  CommandResult running = c.Verify({"--key", c.key(), "--db", c.db()});
  EXPECT_EQ(running.exit_code, 0) << running.output;
  // 1: the log does not hold the kept head (rewritten), or not that far (truncated), or a MAC
  // fails under another key, or no record is authenticated.
  CommandResult other = c.Verify({"--expect-seq", "2", "--expect-head", std::string(64, 'e')});
  EXPECT_EQ(other.exit_code, 1) << other.output;
  EXPECT_NE(other.output.find("REWRITTEN"), std::string::npos) << other.output;
  CommandResult beyond = c.Verify({"--expect-seq", "9", "--expect-head", head});
  EXPECT_EQ(beyond.exit_code, 1) << beyond.output;
  EXPECT_NE(beyond.output.find("TRUNCATED"), std::string::npos) << beyond.output;
  const std::string wrong_key = c.dir() + "/wrong.key";
  std::ofstream(wrong_key) << std::string(32, 'k');
  EXPECT_EQ(c.Verify({"--key", wrong_key}).exit_code, 1);
  const std::string unkeyed = c.dir() + "/unkeyed.log";
  {
    nlohmann::json r = {{"seq", 1}, {"event", "x"}, {"prev", ""}};
    r["hash"] = ChainHash("", r);
    WriteLines(unkeyed, {r.dump()});
  }
  CommandResult unauth = c.Fleetctl({"audit", "verify", unkeyed, "--key", c.key()});
  EXPECT_EQ(unauth.exit_code, 1) << unauth.output;
  EXPECT_NE(unauth.output.find("NOT AUTHENTICATED"), std::string::npos) << unauth.output;
  // 2: usage and I/O errors.
  EXPECT_EQ(c.Fleetctl({"audit", "verify", c.dir() + "/no-such.log"}).exit_code, 2);
  CommandResult no_key = c.Verify({"--key", c.dir() + "/no-such.key"});
  EXPECT_EQ(no_key.exit_code, 2) << no_key.output;
  EXPECT_NE(no_key.output.find("no-such.key does not exist"), std::string::npos) << no_key.output;
  EXPECT_EQ(c.Verify({"--expect-seq", "2"}).exit_code, 2);
  EXPECT_EQ(c.Verify({"--expect-seq", "2", "--expect-head", "abc"}).exit_code, 2);
  EXPECT_EQ(c.Verify({"--db", c.db(), "--expect-seq", "2", "--expect-head", head}).exit_code, 2);
  EXPECT_EQ(c.Verify({"--db", c.dir() + "/no-such.db"}).exit_code, 2);
}

// kill -9 after the record is in the file and before the database has its head: the next
// start finds the log one record ahead, which only a crash explains, and records the head.
TEST(AuditTrail, ACrashBetweenAppendAndHeadUpdateIsRepairedAtStart) {
  AuditCluster c;
  {
    ScopedFailpoint fp("audit.before_head_update@2");
    ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();  // record 1: its token
  }
  CommandResult killed = c.Fleetctl({"token", "create"});
  EXPECT_NE(killed.exit_code, 0);
  EXPECT_EQ(c.coordinator().Wait(std::chrono::seconds(20)), -SIGKILL) << c.coordinator().Log();
  CommandResult ahead = c.Verify({"--key", c.key(), "--db", c.db()});
  EXPECT_EQ(ahead.exit_code, 0) << ahead.output;
  EXPECT_NE(ahead.output.find("1 record(s) after the database's recorded head"), std::string::npos)
      << ahead.output;
  ASSERT_TRUE(c.StartCoordinator({}, c.port())) << c.coordinator().Log();
  EXPECT_NE(c.coordinator().Log().find("was written but not yet in the state database"),
            std::string::npos)
      << c.coordinator().Log();
  CommandResult same = c.Verify({"--key", c.key(), "--db", c.db()});
  EXPECT_EQ(same.exit_code, 0) << same.output;
  EXPECT_NE(same.output.find("matches the database's recorded head"), std::string::npos)
      << same.output;
}

// A state directory from before the audit key: the first start makes the key (logged) and
// carries the unkeyed records forward under a MACed "audit_keyed" record.
TEST(AuditTrail, AnOlderStateDirectoryGetsItsKeyAndItsRecordsCarriedForward) {
  AuditCluster c;
  ASSERT_EQ(std::remove(c.key().c_str()), 0);
  std::vector<std::string> legacy;
  std::string prev;
  for (int i = 1; i <= 2; ++i) {
    nlohmann::json r = {
        {"seq", i}, {"time_ms", i}, {"event", "token_create"}, {"actor", "admin"}, {"prev", prev}};
    r["hash"] = ChainHash(prev, r);
    prev = r["hash"];
    legacy.push_back(r.dump());
  }
  WriteLines(c.log(), legacy);
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  EXPECT_NE(c.coordinator().Log().find("created the audit MAC key " + c.key()), std::string::npos)
      << c.coordinator().Log();
  struct stat st {};
  ASSERT_EQ(stat(c.key().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, 32);
  auto lines = Lines(c.log());
  ASSERT_GE(lines.size(), 3u);
  auto keyed = nlohmann::json::parse(lines[2]);
  EXPECT_EQ(keyed["event"], "audit_keyed");
  EXPECT_EQ(keyed["unkeyed_head"], prev);
  CommandResult v = c.Verify({"--key", c.key(), "--db", c.db()});
  EXPECT_EQ(v.exit_code, 0) << v.output;
  EXPECT_NE(v.output.find("the first 2 records predate the key"), std::string::npos) << v.output;
}

// Enroll over server-authenticated TLS, as a device does.
grpc::Status Enroll(Cluster& c, const std::string& id, const std::string& token,
                    v1::EnrollResponse* resp) {
  ClientTlsOptions tls;
  tls.ca_pem = ReadAll(c.ca());
  auto stub = v1::Enrollment::NewStub(*MakeChannel(c.address(), tls, 4 << 20));
  // A current client's CSR: it asks the CA to certify its SecAgg signing key.
  const std::string secagg_key = crypto::ToString(crypto::SigningKey::Generate().public_key());
  v1::EnrollRequest req =
      MakeEnrollRequest(id, token, *crypto::MakeCsr(*crypto::GenerateP256Key(), id, secagg_key));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return stub->Enroll(&ctx, req, resp);
}

std::string BootstrapToken(Cluster& c) {
  std::string b = ReadAll(c.bootstrap());
  size_t at = b.find("fleet1_");
  return b.substr(at, b.find('\n', at) - at);
}

TEST(FailClosed, NoCertificateIsIssuedWhenTheEnrollmentCannotBeAudited) {
  AuditCluster c;
  {
    ScopedFailpoint fp("audit.append_fail.enroll");
    ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  }
  v1::EnrollResponse resp;
  grpc::Status s = Enroll(c, "sensor-1", BootstrapToken(c), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_NE(s.error_message().find("no certificate was issued"), std::string::npos)
      << s.error_message();
  EXPECT_TRUE(resp.certificate_pem().empty());
  // The log now refuses records: later attempts are turned away before a token use is spent.
  const std::string uses_before = c.Fleetctl({"token", "list"}).output;
  v1::EnrollResponse again;
  grpc::Status s2 = Enroll(c, "sensor-1", BootstrapToken(c), &again);
  EXPECT_EQ(s2.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(s2.error_message().find("enrollment is suspended"), std::string::npos)
      << s2.error_message();
  EXPECT_TRUE(again.certificate_pem().empty());
  EXPECT_EQ(c.Fleetctl({"token", "list"}).output, uses_before);
  EXPECT_EQ(ReadAll(c.log()).find("\"event\":\"enroll\""), std::string::npos);
  // What is in the file still verifies: the failed record left nothing behind.
  EXPECT_EQ(c.Verify({"--key", c.key(), "--db", c.db()}).exit_code, 0);
}

TEST(FailClosed, AJobWhoseSubmissionCannotBeAuditedIsNotCreated) {
  AuditCluster c;
  {
    ScopedFailpoint fp("audit.append_fail.job_submit");
    ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  }
  CommandResult submit =
      c.Fleetctl({"job", "submit", "-f",
                  c.WriteJob("unaudited", 1, 1, 1, "secure_aggregation: {enabled: false}\n")});
  EXPECT_EQ(submit.exit_code, 1) << submit.output;
  EXPECT_NE(submit.output.find("job not created"), std::string::npos) << submit.output;
  CommandResult list = c.Fleetctl({"-o", "json", "job", "list"});
  EXPECT_EQ(list.output.find("job-"), std::string::npos) << list.output;
  c.Stop();
  ASSERT_TRUE(c.StartCoordinator({}, c.port())) << c.coordinator().Log();
  EXPECT_EQ(c.Fleetctl({"-o", "json", "job", "list"}).output.find("job-"), std::string::npos);
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

// Revocation fails safe: it takes effect (and stays in force after a restart) even when it
// cannot be recorded, and the admin is told it is not on record; revoking again records it.
TEST(FailClosed, ARevocationThatCannotBeAuditedStillTakesEffectAndSaysSo) {
  AuditCluster c;
  {
    ScopedFailpoint fp("audit.append_fail.device_revoke");
    ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  }
  const ClientTlsOptions tls = c.DeviceTls("sensor-7");
  ASSERT_TRUE(JoinAs(c, tls, "sensor-7").ok());
  CommandResult revoke = c.Fleetctl({"device", "revoke", "sensor-7"});
  EXPECT_EQ(revoke.exit_code, 1) << revoke.output;
  EXPECT_NE(revoke.output.find("is revoked (in force now), but the revocation is NOT in the "
                               "audit log"),
            std::string::npos)
      << revoke.output;
  EXPECT_EQ(JoinAs(c, tls, "sensor-7").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  c.Stop();
  ASSERT_TRUE(c.StartCoordinator({}, c.port())) << c.coordinator().Log();
  EXPECT_EQ(JoinAs(c, tls, "sensor-7").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ReadAll(c.log()).find("device_revoke"), std::string::npos);
  CommandResult again = c.Fleetctl({"device", "revoke", "sensor-7"});
  EXPECT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(ReadAll(c.log()).find("\"event\":\"device_revoke\""), std::string::npos);
}

// A round that cannot be recorded is not counted: nothing of it is committed, and the job
// fails with the reason instead of running on unaudited or recomputing the round.
TEST(FailClosed, ARoundThatCannotBeAuditedIsNotCommittedAndTheJobStops) {
  AuditCluster c;
  {
    ScopedFailpoint fp("audit.append_fail.round_complete");
    ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  }
  for (int s : {1, 3}) c.StartHarClient(s);
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() >= 2; }, std::chrono::seconds(30)));
  CommandResult submit =
      c.Fleetctl({"job", "submit", "-f",
                  c.WriteJob("unaudited-rounds", 3, 2, 2,
                             "secure_aggregation: {enabled: false}\nmax_round_retries: 2\n")});
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  const std::string id = submit.output.substr(0, submit.output.find('\n'));
  CommandResult watch = c.Fleetctl({"job", "watch", id});
  EXPECT_EQ(watch.exit_code, 1) << watch.output;
  CommandResult get = c.Fleetctl({"-o", "json", "job", "get", id});
  EXPECT_NE(get.output.find("\"state\": \"FAILED\""), std::string::npos) << get.output;
  EXPECT_NE(get.output.find("round 1 cannot be recorded in the audit log"), std::string::npos)
      << get.output;
  EXPECT_NE(get.output.find("it was not committed"), std::string::npos) << get.output;
  EXPECT_TRUE(JsonInts(get.output, "participants").empty()) << "no round counted: " << get.output;
  EXPECT_EQ(c.coordinator().Log().find("(attempt 1 of"), std::string::npos)
      << "not retried: " << c.coordinator().Log();
  EXPECT_FALSE(FileExists(c.state_dir() + "/checkpoints/" + id + "/round-1.tensors"));
  EXPECT_EQ(ReadAll(c.log()).find("round_complete"), std::string::npos);
}

// The same under secure aggregation, where the sum was already revealed when the record fails:
// the revealed sum is marked final (failed after unmasking) and the round is not run again.
TEST(FailClosed, ASecureRoundThatCannotBeAuditedAfterUnmaskingIsNotRunAgain) {
  AuditCluster c;
  {
    ScopedFailpoint fp("audit.append_fail.round_complete");
    ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  }
  for (int s : {1, 3, 5}) c.StartHarClient(s);
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() >= 3; }, std::chrono::seconds(30)));
  CommandResult submit = c.Fleetctl(
      {"job", "submit", "-f", c.WriteJob("unaudited-secure", 2, 3, 3, "max_round_retries: 2\n")});
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  const std::string id = submit.output.substr(0, submit.output.find('\n'));
  EXPECT_EQ(c.Fleetctl({"job", "watch", id}).exit_code, 1);
  CommandResult get = c.Fleetctl({"-o", "json", "job", "get", id});
  EXPECT_NE(get.output.find("\"state\": \"FAILED\""), std::string::npos) << get.output;
  EXPECT_NE(get.output.find("round 1 cannot be recorded in the audit log"), std::string::npos)
      << get.output;
  EXPECT_TRUE(JsonInts(get.output, "participants").empty()) << get.output;
  // The revealed sum is on record as final for its devices.
  EXPECT_NE(get.output.find("\"failure\": \"round 1 cannot be recorded in the audit log"),
            std::string::npos)
      << get.output;
  for (int attempt : JsonInts(get.output, "attempt")) {
    EXPECT_EQ(attempt, 1) << "one attempt only: " << get.output;
  }
  EXPECT_EQ(c.coordinator().Log().find("(attempt 1 of"), std::string::npos);
}

}  // namespace
}  // namespace fleet::testing

namespace fleet::testing {
namespace {

unsigned Mode(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

struct ScopedUmask {
  explicit ScopedUmask(mode_t m) : old(::umask(m)) {}
  ~ScopedUmask() { ::umask(old); }
  mode_t old;
};

// Under the most permissive umask every state directory is 0700 and every file in them 0600:
// the coordinator's database (with its WAL and shared-memory files), PKI, audit log and
// checkpoints, and the device's key, certificate and state. A temporary a crash left in the
// device's state directory is gone after the next start.
TEST(Hygiene, StateIsPrivateWhateverTheUmask) {
  ScopedUmask permissive(0);
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  const std::string device = c.dir() + "/device-1";
  ASSERT_EQ(::mkdir(device.c_str(), 0755), 0);  // as older versions made it
  std::ofstream(device + "/device.key.tmp.4242") << "half a key";
  c.StartHarClient(1);
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() >= 1; }, std::chrono::seconds(30)));
  CommandResult submit =
      c.Fleetctl({"job", "submit", "-f",
                  c.WriteJob("private", 1, 1, 1, "secure_aggregation: {enabled: false}\n")});
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  const std::string id = submit.output.substr(0, submit.output.find('\n'));
  ASSERT_EQ(c.Fleetctl({"job", "watch", id}).exit_code, 0);

  const std::string s = c.state_dir();
  for (const std::string& d : {s, s + "/pki", s + "/checkpoints", s + "/checkpoints/" + id}) {
    EXPECT_EQ(Mode(d), 0700u) << d;
  }
  for (const std::string& f :
       {s + "/coordinator.db", s + "/coordinator.db-wal", s + "/coordinator.db-shm",
        s + "/audit.log", s + "/pki/ca.key", s + "/pki/ca.pem", s + "/pki/server.key",
        s + "/pki/admin.key", s + "/pki/model-signing.key", s + "/pki/audit.key",
        s + "/checkpoints/" + id + "/round-1.tensors"}) {
    EXPECT_EQ(Mode(f), 0600u) << f;
  }
  EXPECT_EQ(Mode(device), 0700u);
  for (const char* f : {"/device.key", "/device.pem", "/ca.pem", "/model-signing.pub"}) {
    EXPECT_EQ(Mode(device + f), 0600u) << f;
  }
  EXPECT_FALSE(FileExists(device + "/device.key.tmp.4242"));
}

}  // namespace
}  // namespace fleet::testing
