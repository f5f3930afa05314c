// fleet-sim against the real coordinator (issue 7): hundreds of virtual devices, each with its
// own enrolled certificate and mTLS connection, join, heartbeat, park a long poll, and take part
// in a plain round together. The coordinator must count every update once.
#include <gtest/gtest.h>

#include <regex>

#include "harness.h"

namespace fleet::testing {
namespace {

int JsonInt(const std::string& json, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(json, m, std::regex("\"" + key + "\": ([0-9]+)"))) return -1;
  return std::stoi(m[1]);
}


TEST(Scale, FleetSimDevicesEnrollJoinAndTrainInOneRound) {
  constexpr int kDevices = 200;
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator({"--heartbeat-interval-ms", "2000", "--offline-after-ms",
                                  "10000"}))
      << c.coordinator().Log();
  const std::string stats = c.dir() + "/sim-stats.json";
  Process sim;
  ASSERT_TRUE(sim.Start({FLEET_SIM_BIN, "--bootstrap", c.bootstrap(), "--state-dir",
                         c.dir() + "/sim", "--devices", std::to_string(kDevices), "--dataset",
                         "sim", "--workers", "4", "--stats-file", stats},
                        c.dir() + "/sim.log"));
  ASSERT_TRUE(WaitFor([&] { return JsonInt(ReadAll(stats), "joined") == kDevices; },
                      std::chrono::seconds(120)))
      << ReadAll(stats) << ReadAll(c.dir() + "/sim.log");
  EXPECT_EQ(c.OnlineDevices(), kDevices);

  const std::string spec = c.dir() + "/sim-job.yaml";
  std::ofstream(spec) << "name: sim\ndataset: sim\n"
                      << "model: {type: mlp, task: classification, input_dim: 16, hidden: [8], "
                         "output_dim: 3}\n"
                      << "train: {optimizer: sgd, learning_rate: 0.1}\nrounds: 2\n"
                      << "min_clients: " << kDevices << "\ntarget_clients: " << kDevices << "\n"
                      << "round_deadline_s: 120\neval_deadline_s: 30\n"
                      << "secure_aggregation: {enabled: false}\n";
  auto job = c.Fleetctl({"job", "submit", "--watch", "-f", spec});
  ASSERT_EQ(job.exit_code, 0) << job.output << c.coordinator().Log();
  std::string id = job.output.substr(0, job.output.find('\n'));
  std::string json = c.Fleetctl({"-o", "json", "job", "get", id}).output;
  EXPECT_EQ(JsonInts(json, "participants"), (std::vector<int>{kDevices, kDevices})) << json;
  EXPECT_EQ(JsonInts(json, "eval_clients"), (std::vector<int>{kDevices, kDevices})) << json;

  sim.Kill(SIGTERM);
  EXPECT_EQ(sim.Wait(std::chrono::seconds(60)), 0) << ReadAll(c.dir() + "/sim.log");
  std::string s = ReadAll(stats);
  EXPECT_EQ(JsonInt(s, "updates"), 2 * kDevices) << s;
  EXPECT_EQ(JsonInt(s, "update_errors"), 0) << s;
  EXPECT_EQ(JsonInt(s, "heartbeat_errors"), 0) << s;
}

}  // namespace
}  // namespace fleet::testing
