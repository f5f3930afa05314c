// A revealed secure sum is never recomputed over nearly the same inputs (issue 16, item 1), with
// real processes: a corrupt device whose input is out of range, a kill -9 of the coordinator
// between unmasking and the commit, and a coordinator that "forgets" what it revealed. Devices
// train again on the same data from the same model, so a second sum over that model with an
// overlapping cohort would let the two sums be subtracted.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <regex>
#include <set>

#include "harness.h"

namespace fleet::testing {
namespace {

struct ScopedFailpoint {
  explicit ScopedFailpoint(const std::string& spec) { setenv("FLEET_FAILPOINTS", spec.c_str(), 1); }
  ~ScopedFailpoint() { unsetenv("FLEET_FAILPOINTS"); }
};

struct Revealed {
  uint32_t round = 0, attempt = 0;
  std::string model;
  std::set<std::string> devices;
  std::string outcome;
};

// The "revealed sum:" lines of `fleetctl job get` (at most 5 devices each are printed; the
// tests stay below that).
std::vector<Revealed> RevealedSums(const std::string& table) {
  std::vector<Revealed> out;
  std::regex re(
      "revealed sum:   round ([0-9]+) attempt ([0-9]+), model ([0-9a-f]+), [0-9]+ devices "
      "\\(([^)]*)\\), at [0-9-]+ [0-9:]+Z: ([^\n]*)");
  for (auto it = std::sregex_iterator(table.begin(), table.end(), re); it != std::sregex_iterator();
       ++it) {
    Revealed r;
    r.round = static_cast<uint32_t>(std::stoul((*it)[1]));
    r.attempt = static_cast<uint32_t>(std::stoul((*it)[2]));
    r.model = (*it)[3];
    std::string list = (*it)[4];
    std::regex id("[^, ]+");
    for (auto d = std::sregex_iterator(list.begin(), list.end(), id); d != std::sregex_iterator();
         ++d) {
      r.devices.insert(d->str());
    }
    r.outcome = (*it)[5];
    out.push_back(r);
  }
  return out;
}

bool Disjoint(const std::set<std::string>& a, const std::set<std::string>& b) {
  for (const auto& x : a) {
    if (b.count(x) > 0) return false;
  }
  return true;
}

int Count(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
  return n;
}

constexpr char kExcluded[] =
    "3 excluded: their updates are in a revealed sum over this model (round 1 attempt 1)";

// One corrupt device adds 2^31 to one coordinate of its quantized input: the unmasked sum is out
// of range, the round fails after unmasking and is recorded as such (job get, audit log). The
// retry over the same model does not include any of the three revealed devices: with only them
// online the job waits, saying why; three fresh devices then complete the round.
TEST(RevealedSum, FailureAfterUnmaskingRetriesOnlyWithADisjointCohort) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  std::vector<Process*> first;
  first.push_back(&c.StartHarClient(1, true, "", {"--fault-corrupt-input"}));
  for (int s : {3, 5}) first.push_back(&c.StartHarClient(s));
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() >= 3; }, std::chrono::seconds(60)));
  auto submit =
      c.Fleetctl({"job", "submit", "-f",
                  c.WriteJob("it-revealed", 1, 3, 3,
                             "max_round_retries: 2\nsecure_aggregation: {stage_timeout_s: 20}\n")});
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  const std::string id = submit.output.substr(0, submit.output.find('\n'));

  // The job waits: every online device is in the revealed sum over this model.
  ASSERT_TRUE(WaitFor(
      [&] {
        return c.Fleetctl({"job", "get", id}).output.find(kExcluded) != std::string::npos;
      },
      std::chrono::seconds(120)))
      << c.Fleetctl({"job", "get", id}).output << c.coordinator().Log();
  auto table = c.Fleetctl({"job", "get", id});
  EXPECT_NE(table.output.find("state:         pending"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("waiting for:   0 of min 3 devices eligible"), std::string::npos)
      << table.output;
  EXPECT_NE(table.output.find("aborted round:  1 attempt 1 at"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find(", after unmasking: secure aggregate unusable: aggregate element 0 "
                              "exceeds its bound"),
            std::string::npos)
      << table.output;
  std::vector<Revealed> sums = RevealedSums(table.output);
  ASSERT_EQ(sums.size(), 1u) << table.output;
  EXPECT_EQ(sums[0].devices,
            (std::set<std::string>{"har-subject-1", "har-subject-3", "har-subject-5"}));
  EXPECT_EQ(sums[0].outcome.rfind("failed after unmasking: secure aggregate unusable", 0), 0u)
      << sums[0].outcome;
  const std::string audit = ReadAll(c.state_dir() + "/audit.log");
  EXPECT_NE(audit.find("\"event\":\"round_failed_after_unmask\""), std::string::npos) << audit;
  EXPECT_NE(audit.find("\"attempt\":1"), std::string::npos) << audit;
  EXPECT_NE(audit.find("\"survivors\":3"), std::string::npos) << audit;
  EXPECT_EQ(audit.find("\"event\":\"round_complete\""), std::string::npos) << audit;

  for (int s : {6, 7, 8}) c.StartHarClient(s);
  auto watch = c.Fleetctl({"job", "watch", id});
  ASSERT_EQ(watch.exit_code, 0) << watch.output << c.coordinator().Log();
  table = c.Fleetctl({"job", "get", id});
  sums = RevealedSums(table.output);
  ASSERT_EQ(sums.size(), 2u) << table.output;
  EXPECT_EQ(sums[1].attempt, 2u);
  EXPECT_EQ(sums[1].model, sums[0].model);  // the same model version ...
  EXPECT_EQ(sums[1].devices,                // ... summed only over new devices
            (std::set<std::string>{"har-subject-6", "har-subject-7", "har-subject-8"}));
  EXPECT_TRUE(Disjoint(sums[0].devices, sums[1].devices));
  EXPECT_EQ(sums[1].outcome, "committed");
  auto json = c.Fleetctl({"-o", "json", "job", "get", id});
  EXPECT_NE(json.output.find("\"state\": \"SUCCEEDED\""), std::string::npos) << json.output;
  EXPECT_EQ(JsonInts(json.output, "participants"), (std::vector<int>{3})) << json.output;
  EXPECT_NE(json.output.find("\"after_unmask\": true"), std::string::npos) << json.output;
  // The first three were asked once: each trained for round 1 once and was never asked again
  // (so never had to refuse).
  for (Process* p : first) {
    EXPECT_EQ(Count(p->Log(), "round 1: trained on"), 1) << p->Log();
    EXPECT_EQ(p->Log().find("refusing secure aggregation"), std::string::npos) << p->Log();
  }
}

// kill -9 of the coordinator after the unmasking of round 1 and before its commit (failpoint
// round.collected, reached in the secure path once every unmask share is in): the restarted
// coordinator restores the revealed record, marks the attempt failed after unmasking, and the
// replayed round 1 excludes its three devices. One device is left, so the job waits; two new
// ones let it finish.
TEST(RevealedSum, CrashBetweenUnmaskAndCommitReplaysWithoutTheRevealedDevices) {
  Cluster c;
  {
    ScopedFailpoint fp("round.collected@1");
    ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  }
  for (int s : {1, 3, 5, 6}) c.StartHarClient(s);
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() >= 4; }, std::chrono::seconds(60)));
  auto submit = c.Fleetctl(
      {"job", "submit", "-f",
       c.WriteJob("it-revealed-crash", 1, 3, 3, "secure_aggregation: {stage_timeout_s: 20}\n")});
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  const std::string id = submit.output.substr(0, submit.output.find('\n'));
  ASSERT_EQ(c.coordinator().Wait(std::chrono::seconds(120)), -SIGKILL) << c.coordinator().Log();
  EXPECT_NE(c.coordinator().Log().find("failpoint round.collected@1"), std::string::npos);
  EXPECT_NE(c.coordinator().Log().find("unmasking the sum of 3 devices over model"),
            std::string::npos)
      << c.coordinator().Log();
  ASSERT_TRUE(c.StartCoordinator({}, c.port())) << c.coordinator().Log();

  // Once all four are back: the one outside the revealed sum is all that is eligible.
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::string out = c.Fleetctl({"job", "get", id}).output;
        return out.find(kExcluded) != std::string::npos &&
               out.find("waiting for:   1 of min 3 devices eligible (4 online") !=
                   std::string::npos;
      },
      std::chrono::seconds(120)))
      << c.Fleetctl({"job", "get", id}).output << c.coordinator().Log();
  auto table = c.Fleetctl({"job", "get", id});
  EXPECT_NE(table.output.find(", after unmasking: the coordinator restarted before round 1 was "
                              "kept"),
            std::string::npos)
      << table.output;
  std::vector<Revealed> sums = RevealedSums(table.output);
  ASSERT_EQ(sums.size(), 1u) << table.output;
  EXPECT_EQ(sums[0].devices.size(), 3u);
  const std::string audit = ReadAll(c.state_dir() + "/audit.log");
  EXPECT_NE(audit.find("\"event\":\"round_failed_after_unmask\""), std::string::npos) << audit;

  for (int s : {7, 8}) c.StartHarClient(s);
  auto watch = c.Fleetctl({"job", "watch", id});
  ASSERT_EQ(watch.exit_code, 0) << watch.output << c.coordinator().Log();
  table = c.Fleetctl({"job", "get", id});
  sums = RevealedSums(table.output);
  ASSERT_EQ(sums.size(), 2u) << table.output;
  EXPECT_EQ(sums[1].attempt, 2u);
  EXPECT_EQ(sums[1].model, sums[0].model);
  EXPECT_EQ(sums[1].devices.size(), 3u);
  EXPECT_TRUE(Disjoint(sums[0].devices, sums[1].devices)) << table.output;
  EXPECT_NE(table.output.find("restarts:      1"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("state:         succeeded"), std::string::npos) << table.output;
}

// A coordinator that ignores the rule: after a kill -9 between unmasking and commit its revealed
// record is deleted from the SQLite file (sqlite3 CLI), and the devices were restarted too. The
// replayed round asks the same three devices for a sum over the same model; each refuses with
// the reason, from the record it kept across its own restart, and the job fails instead of
// revealing a second sum.
TEST(RevealedSum, DevicesRefuseASecondSumOverTheSameModel) {
  Cluster c;
  {
    ScopedFailpoint fp("round.collected@1");
    ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  }
  const std::vector<int> subjects = {1, 3, 5};
  std::vector<Process*> devices;
  for (int s : subjects) devices.push_back(&c.StartHarClient(s));
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() >= 3; }, std::chrono::seconds(60)));
  auto submit = c.Fleetctl({"job", "submit", "-f",
                            c.WriteJob("it-revealed-refuse", 1, 3, 3,
                                       "max_round_retries: 0\n"
                                       "secure_aggregation: {stage_timeout_s: 20}\n")});
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  const std::string id = submit.output.substr(0, submit.output.find('\n'));
  ASSERT_EQ(c.coordinator().Wait(std::chrono::seconds(120)), -SIGKILL) << c.coordinator().Log();
  std::smatch m;
  const std::string first_log = c.coordinator().Log();
  ASSERT_TRUE(std::regex_search(
      first_log, m, std::regex("unmasking the sum of 3 devices over model ([0-9a-f]{12})")))
      << first_log;
  const std::string model = m[1];

  // The devices restart as well: what they refuse must come from their files.
  for (Process* p : devices) p->Kill(SIGKILL);
  for (int s : subjects) {
    const std::string record = c.dir() + "/device-" + std::to_string(s) + "/secagg-unmasked";
    struct stat st {};
    ASSERT_EQ(::stat(record.c_str(), &st), 0) << record;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << record;
    EXPECT_NE(ReadAll(record).find(id + " "), std::string::npos) << ReadAll(record);
  }
  const std::string db = c.state_dir() + "/coordinator.db";
  // (Both records: the job's own and the fleet-wide table.)
  auto del = RunCommand({"/usr/bin/sqlite3", db,
                         "UPDATE jobs SET revealed = x'' WHERE id = '" + id +
                             "'; DELETE FROM revealed_sums; SELECT length(revealed) FROM jobs;"},
                        c.dir());
  ASSERT_EQ(del.exit_code, 0) << del.output;
  EXPECT_NE(del.output.find("0"), std::string::npos) << del.output;
  std::vector<Process*> restarted;
  for (int s : subjects) restarted.push_back(&c.StartHarClient(s));
  ASSERT_TRUE(c.StartCoordinator({}, c.port())) << c.coordinator().Log();

  auto watch = c.Fleetctl({"job", "watch", id});
  EXPECT_EQ(watch.exit_code, 1) << watch.output << c.coordinator().Log();
  const std::string reason =
      "refusing secure aggregation: this device already helped reveal a "
      "sum over this model (job " +
      id + ", model " + model + ")";
  for (size_t i = 0; i < subjects.size(); ++i) {
    EXPECT_NE(restarted[i]->Log().find(reason), std::string::npos) << restarted[i]->Log();
    EXPECT_NE(c.coordinator().Log().find("device har-subject-" + std::to_string(subjects[i]) +
                                         " declined: " + reason),
              std::string::npos)
        << c.coordinator().Log();
  }
  auto json = c.Fleetctl({"-o", "json", "job", "get", id});
  EXPECT_NE(json.output.find("\"state\": \"FAILED\""), std::string::npos) << json.output;
  EXPECT_TRUE(JsonInts(json.output, "participants").empty()) << json.output;
  EXPECT_NE(json.output.find("nothing was unmasked"), std::string::npos) << json.output;
}

}  // namespace
}  // namespace fleet::testing
