// Scheduling with real clients (issue 7): devices report eligibility (power from a sysfs tree
// the test controls) and labels; jobs select on them, over-select and close at their target,
// and keep devices out for a cooldown. `fleetctl device list` and `job get` show why.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include "common/file_util.h"
#include "harness.h"

namespace fleet::testing {
namespace {

constexpr char kPlain[] = "secure_aggregation: {enabled: false}\n";


int Count(const std::string& s, const std::string& needle) {
  int n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}

// A laptop-like power tree: mains unplugged, battery at `percent`, discharging.
std::string BatteryTree(const std::string& dir, int percent) {
  EXPECT_TRUE(MakeDirs(dir + "/AC").ok());
  EXPECT_TRUE(MakeDirs(dir + "/BAT0").ok());
  std::ofstream(dir + "/AC/type") << "Mains\n";
  std::ofstream(dir + "/AC/online") << "0\n";
  std::ofstream(dir + "/BAT0/type") << "Battery\n";
  std::ofstream(dir + "/BAT0/capacity") << percent << "\n";
  std::ofstream(dir + "/BAT0/status") << "Discharging\n";
  return dir;
}

TEST(Scheduling, EligibilityLabelsOverSelectionAndCooldown) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  for (int s : {1, 3}) c.set_client_config_extra(s, "labels: {site: ward-a}\n");
  c.set_client_config_extra(5, "labels: {site: ward-b}\n");
  c.set_client_config_extra(6, "labels: {site: ward-b}\neligibility: {power_supply_dir: " +
                                   BatteryTree(c.dir() + "/power-6", 15) + "}\n");
  for (int s : {1, 3, 5, 6}) c.StartHarClient(s);
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() >= 4; }, std::chrono::seconds(30)));

  auto list = c.Fleetctl({"device", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.output;
  EXPECT_NE(list.output.find("bat 15%"), std::string::npos) << list.output;
  EXPECT_EQ(Count(list.output, "site=ward-a"), 2) << list.output;
  EXPECT_NE(list.output.find("POWER"), std::string::npos) << list.output;

  // Ward B devices on power: only one of two qualifies, so the job waits and says why.
  auto pending = c.Fleetctl(
      {"job", "submit", "-f",
       c.WriteJob("it-ward-b", 1, 2, 2,
                  std::string(kPlain) + "selection: {labels: {site: ward-b}, require_power: true}\n")});
  ASSERT_EQ(pending.exit_code, 0) << pending.output;
  std::string pending_id = pending.output.substr(0, pending.output.find('\n'));
  ASSERT_TRUE(WaitFor(
      [&] {
        return c.Fleetctl({"job", "get", pending_id}).output.find("waiting for:") !=
               std::string::npos;
      },
      std::chrono::seconds(20)));
  std::string get = c.Fleetctl({"job", "get", pending_id}).output;
  EXPECT_NE(get.find("waiting for:   1 of min 2 devices eligible (4 online with dataset "
                     "'uci-har'; 2 labels do not match; 1 not on power)"),
            std::string::npos)
      << get;
  ASSERT_EQ(c.Fleetctl({"job", "stop", pending_id}).exit_code, 0);

  // Over-selection: all four selected, each round closes at its target of two updates.
  auto over = c.Fleetctl({"job", "submit", "--watch", "-f",
                          c.WriteJob("it-over", 2, 2, 2,
                                     std::string(kPlain) + "selection: {over_selection: 1.0}\n")});
  ASSERT_EQ(over.exit_code, 0) << over.output << c.coordinator().Log();
  std::string over_id = over.output.substr(0, over.output.find('\n'));
  std::string json = c.Fleetctl({"-o", "json", "job", "get", over_id}).output;
  EXPECT_EQ(JsonInts(json, "selected"), (std::vector<int>{4, 4})) << json;
  EXPECT_EQ(JsonInts(json, "participants"), (std::vector<int>{2, 2})) << json;

  // Cooldown 1 with target 2 of 4: the devices of round 1 sit out round 2, so every device
  // trains exactly once.
  auto cool = c.Fleetctl({"job", "submit", "--watch", "-f",
                          c.WriteJob("it-cool", 2, 2, 2,
                                     std::string(kPlain) + "selection: {cooldown_rounds: 1}\n")});
  ASSERT_EQ(cool.exit_code, 0) << cool.output << c.coordinator().Log();
  std::string cool_id = cool.output.substr(0, cool.output.find('\n'));
  for (int s : {1, 3, 5, 6}) {
    std::string log = ReadAll(c.dir() + "/client-" + std::to_string(s) + ".log");
    std::regex trained("job " + cool_id + " round [0-9]+: trained on");
    EXPECT_EQ(std::distance(std::sregex_iterator(log.begin(), log.end(), trained),
                            std::sregex_iterator()),
              1)
        << "subject " << s << "\n"
        << log;
  }
}

}  // namespace
}  // namespace fleet::testing
