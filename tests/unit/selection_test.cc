// Round planning (coordinator/selection.h) over device snapshots, and the eligibility a client
// reads from a sysfs/procfs tree (client/eligibility.h).
#include <gtest/gtest.h>

#include <fstream>

#include "client/eligibility.h"
#include "common/file_util.h"
#include "coordinator/selection.h"
#include "test_util.h"

namespace fleet {
namespace {

v1::DeviceStatus Device(const std::string& id, uint64_t train = 100) {
  v1::DeviceStatus d;
  d.set_id(id);
  d.set_online(true);
  auto* ds = d.add_datasets();
  ds->set_name("har");
  ds->set_train_examples(train);
  ds->set_eval_examples(10);
  d.mutable_eligibility()->set_on_power(true);
  d.mutable_eligibility()->set_battery_percent(100);
  d.mutable_eligibility()->set_idle(true);
  d.mutable_eligibility()->set_cpu_load(0.1f);
  d.mutable_eligibility()->set_free_memory_mb(4000);
  return d;
}

v1::JobSpec Spec(uint32_t min, uint32_t target) {
  v1::JobSpec s;
  s.set_dataset("har");
  s.set_min_clients(min);
  s.set_target_clients(target);
  return s;
}

TEST(Selection, EligibilityCriteriaEachExcludeWithAReason) {
  v1::JobSpec spec = Spec(1, 1);
  auto* sel = spec.mutable_selection();
  sel->set_require_power(true);
  sel->set_require_idle(true);
  sel->set_max_cpu_load(0.5f);
  sel->set_min_free_memory_mb(500);
  sel->set_min_examples(50);
  (*sel->mutable_labels())["site"] = "ward3";
  v1::DeviceStatus ok = Device("ok");
  (*ok.mutable_labels())["site"] = "ward3";
  EXPECT_EQ(IneligibleReason(ok, spec, true), "");
  auto with = [&](auto change) {
    v1::DeviceStatus d = ok;
    change(&d);
    return IneligibleReason(d, spec, true);
  };
  EXPECT_EQ(with([](v1::DeviceStatus* d) { d->mutable_eligibility()->set_on_power(false); }),
            "not on power");
  EXPECT_EQ(with([](v1::DeviceStatus* d) { d->mutable_eligibility()->set_idle(false); }),
            "not idle");
  EXPECT_EQ(with([](v1::DeviceStatus* d) { d->mutable_eligibility()->set_cpu_load(0.9f); }),
            "CPU busy");
  EXPECT_EQ(with([](v1::DeviceStatus* d) { d->mutable_eligibility()->set_free_memory_mb(100); }),
            "low memory");
  EXPECT_EQ(with([](v1::DeviceStatus* d) { d->mutable_datasets(0)->set_train_examples(10); }),
            "too few examples");
  EXPECT_EQ(with([](v1::DeviceStatus* d) { (*d->mutable_labels())["site"] = "ward4"; }),
            "labels do not match");
  EXPECT_EQ(with([](v1::DeviceStatus* d) { d->mutable_datasets(0)->set_name("other"); }),
            "no such dataset");
  // Battery: only when not on power.
  spec.mutable_selection()->set_require_power(false);
  spec.mutable_selection()->set_min_battery_percent(30);
  EXPECT_EQ(with([](v1::DeviceStatus* d) {
              d->mutable_eligibility()->set_on_power(false);
              d->mutable_eligibility()->set_battery_percent(20);
            }),
            "battery low");
  EXPECT_EQ(with([](v1::DeviceStatus* d) { d->mutable_eligibility()->set_battery_percent(20); }),
            "");
  // Evaluation needs only the data.
  EXPECT_EQ(with([](v1::DeviceStatus* d) { d->mutable_eligibility()->set_idle(false); }), "not idle");
  v1::DeviceStatus busy = ok;
  busy.mutable_eligibility()->set_idle(false);
  EXPECT_EQ(IneligibleReason(busy, spec, /*training=*/false), "");
}

TEST(Selection, WaitsWithACountedReasonBelowMinClients) {
  v1::JobSpec spec = Spec(3, 3);
  spec.mutable_selection()->set_require_power(true);
  std::vector<v1::DeviceStatus> devices = {Device("a"), Device("b"), Device("c"), Device("d")};
  devices[1].mutable_eligibility()->set_on_power(false);
  devices[2].mutable_eligibility()->set_on_power(false);
  devices[3].set_reserved_by("job-other");
  devices.push_back(Device("offline"));
  devices.back().set_online(false);
  RoundPlan p = PlanRound(spec, "job-1", 1, devices, {}, 1);
  EXPECT_EQ(p.waiting_for,
            "1 of min 3 devices eligible (4 online with dataset 'har'; 1 in another job's round; "
            "2 not on power)");
  EXPECT_EQ(p.select, 0u);
}

TEST(Selection, FractionMaxOverSelectionAndCooldown) {
  std::vector<v1::DeviceStatus> devices;
  for (int i = 0; i < 10; ++i) devices.push_back(Device("d" + std::to_string(i)));
  v1::JobSpec spec = Spec(2, 3);
  RoundPlan p = PlanRound(spec, "j", 1, devices, {}, 1);
  EXPECT_EQ(p.target, 3u);
  EXPECT_EQ(p.select, 3u);
  spec.mutable_selection()->set_over_selection(0.5f);
  p = PlanRound(spec, "j", 1, devices, {}, 1);
  EXPECT_EQ(p.target, 3u);
  EXPECT_EQ(p.select, 5u);  // ceil(3 * 1.5)
  spec.mutable_selection()->set_over_selection(0);
  spec.mutable_selection()->set_fraction(0.5f);
  p = PlanRound(spec, "j", 1, devices, {}, 1);
  EXPECT_EQ(p.target, 5u);
  spec.mutable_selection()->set_max_clients(4);
  p = PlanRound(spec, "j", 1, devices, {}, 1);
  EXPECT_EQ(p.target, 4u);
  // Cooldown 2: a device that took part in round r sits out rounds r+1 and r+2.
  spec.mutable_selection()->set_cooldown_rounds(2);
  std::map<std::string, uint32_t> last = {{"d0", 4}, {"d1", 4}, {"d2", 3}};
  p = PlanRound(spec, "j", 5, devices, last, 1);
  EXPECT_EQ(p.candidates.size(), 7u);
  EXPECT_EQ(p.excluded["cooling down"], 3u);
  p = PlanRound(spec, "j", 6, devices, last, 1);
  EXPECT_EQ(p.candidates.size(), 8u);  // d2 is back
  p = PlanRound(spec, "j", 7, devices, last, 1);
  EXPECT_EQ(p.candidates.size(), 10u);
}

TEST(Selection, FairShareSplitsDevicesBetweenCompetingJobs) {
  std::vector<v1::DeviceStatus> devices;
  for (int i = 0; i < 9; ++i) devices.push_back(Device("d" + std::to_string(i)));
  v1::JobSpec spec = Spec(2, 9);
  EXPECT_EQ(PlanRound(spec, "a", 1, devices, {}, 1).target, 9u);
  EXPECT_EQ(PlanRound(spec, "a", 1, devices, {}, 3).target, 3u);  // ceil(9 / 3)
  EXPECT_EQ(PlanRound(spec, "a", 1, devices, {}, 9).target, 2u);  // never below min_clients
}

// Secure retries over the same model (issue 16): devices whose updates are in a sum already
// revealed over it are never candidates, whatever else holds for them; each sum is counted by
// name, and a shortage waits with that reason. Devices outside the revealed sums run.
TEST(Selection, DevicesInARevealedSumOverTheModelAreNeverCandidates) {
  std::vector<v1::DeviceStatus> devices;
  for (int i = 0; i < 6; ++i) devices.push_back(Device("d" + std::to_string(i)));
  devices[2].mutable_eligibility()->set_on_power(false);
  v1::JobSpec spec = Spec(3, 3);
  spec.mutable_selection()->set_require_power(true);
  const RevealedExclusions revealed = {
      {"d0", "round 3 attempt 1"}, {"d1", "round 3 attempt 1"}, {"d2", "round 3 attempt 2"}};
  RoundPlan p = PlanRound(spec, "j", 3, devices, {}, 1, revealed);
  EXPECT_EQ(p.candidates, (std::vector<std::string>{"d3", "d4", "d5"}));
  EXPECT_EQ(p.excluded.at(RevealedReason("round 3 attempt 1")), 2u);
  EXPECT_EQ(p.excluded.at(RevealedReason("round 3 attempt 2")), 1u);  // not "not on power"
  EXPECT_EQ(p.excluded.count("not on power"), 0u);
  EXPECT_TRUE(p.waiting_for.empty());
  EXPECT_EQ(p.select, 3u);

  devices[5].set_online(false);
  p = PlanRound(spec, "j", 3, devices, {}, 1, revealed);
  EXPECT_EQ(p.select, 0u);
  EXPECT_EQ(p.waiting_for,
            "2 of min 3 devices eligible (5 online with dataset 'har'; 2 excluded: their updates "
            "are in a revealed sum over this model (round 3 attempt 1); 1 excluded: their "
            "updates are in a revealed sum over this model (round 3 attempt 2))");
  // Without exclusions (a plain job, or a new model) the same devices plan as before.
  p = PlanRound(spec, "j", 3, devices, {}, 1);
  EXPECT_EQ(p.candidates, (std::vector<std::string>{"d0", "d1", "d3", "d4"}));
}

TEST(Eligibility, ReadsPowerLoadAndMemoryFromTheKernelTrees) {
  testing::TempDir dir;
  auto write = [&](const std::string& rel, const std::string& text) {
    std::string path = dir.path() + "/" + rel;
    ASSERT_TRUE(MakeDirs(path.substr(0, path.rfind('/'))).ok());
    std::ofstream(path) << text << "\n";
  };
  write("ps/AC/type", "Mains");
  write("ps/AC/online", "0");
  write("ps/BAT0/type", "Battery");
  write("ps/BAT0/capacity", "42");
  write("ps/BAT0/status", "Discharging");
  write("loadavg", "0.00 0.50 0.40 1/200 1234");
  write("meminfo", "MemTotal:  8000000 kB\nMemFree:  100000 kB\nMemAvailable:  2048000 kB");
  EligibilitySources src{dir.path() + "/ps", dir.path() + "/loadavg", dir.path() + "/meminfo", 0.7};
  v1::Eligibility e = ReadEligibility(src);
  EXPECT_FALSE(e.on_power());
  EXPECT_EQ(e.battery_percent(), 42u);
  EXPECT_TRUE(e.idle());
  EXPECT_FLOAT_EQ(e.cpu_load(), 0.0f);
  EXPECT_EQ(e.free_memory_mb(), 2000u);
  write("ps/BAT0/status", "Charging");
  EXPECT_TRUE(ReadEligibility(src).on_power());
  // No power_supply tree at all (a server, a VM): on power, 100%.
  src.power_supply_dir = dir.path() + "/none";
  e = ReadEligibility(src);
  EXPECT_TRUE(e.on_power());
  EXPECT_EQ(e.battery_percent(), 100u);
}

}  // namespace
}  // namespace fleet
