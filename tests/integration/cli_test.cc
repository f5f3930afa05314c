// Binaries as scripts see them: --help, exit codes, and clear errors for bad input.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "harness.h"

namespace fleet::testing {
namespace {

TEST(Cli, HelpAndVersionExitZero) {
  Cluster c;
  for (const char* bin : {FLEET_COORDINATOR_BIN, FLEET_CLIENT_BIN, FLEETCTL_BIN}) {
    auto r = RunCommand({bin, "--help"}, c.dir());
    EXPECT_EQ(r.exit_code, 0) << bin << r.output;
    EXPECT_NE(r.output.find("Usage"), std::string::npos) << r.output;
  }
  auto v = RunCommand({FLEET_COORDINATOR_BIN, "--version"}, c.dir());
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_NE(v.output.find("protocol v3"), std::string::npos);
}

// What systemd's Type=notify and WatchdogSec= see: READY once serving, watchdog pings while
// healthy, STOPPING on SIGTERM, through a real NOTIFY_SOCKET.
TEST(Cli, CoordinatorAndClientSpeakTheSystemdNotifyProtocol) {
  Cluster c;
  const std::string path = c.dir() + "/notify.sock";
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  timeval tv{0, 200000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  // Messages received for `d`, or until one contains `until` (on a loaded CI machine a client
  // can take seconds to load LibTorch and its data).
  auto collect = [&](std::chrono::milliseconds d, const std::string& until = "") {
    std::string all;
    auto end = std::chrono::steady_clock::now() + d;
    char buf[512];
    while (std::chrono::steady_clock::now() < end &&
           (until.empty() || all.find(until) == std::string::npos)) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n > 0) all += std::string(buf, static_cast<size_t>(n)) + "\n";
    }
    return all;
  };
  setenv("NOTIFY_SOCKET", path.c_str(), 1);
  setenv("WATCHDOG_USEC", "400000", 1);
  bool started = c.StartCoordinator();
  std::string coordinator = collect(std::chrono::milliseconds(1500));
  c.StartHarClient(1);
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  ASSERT_TRUE(started) << c.coordinator().Log();
  EXPECT_NE(coordinator.find("READY=1\nSTATUS=serving on 127.0.0.1:"), std::string::npos)
      << coordinator;
  int pings = 0;
  for (size_t p = coordinator.find("WATCHDOG=1"); p != std::string::npos;
       p = coordinator.find("WATCHDOG=1", p + 1)) {
    ++pings;
  }
  EXPECT_GE(pings, 3) << "a WATCHDOG=1 ping every 200 ms: " << coordinator;
  std::string client =
      collect(std::chrono::seconds(30), "STATUS=device har-subject-1 started");
  EXPECT_NE(client.find("STATUS=device har-subject-1 started"), std::string::npos) << client;
  c.coordinator().Kill(SIGTERM);
  EXPECT_NE(collect(std::chrono::seconds(30), "STOPPING=1").find("STOPPING=1"),
            std::string::npos);
  close(fd);
}

TEST(Cli, UsageErrorsExitTwo) {
  Cluster c;
  EXPECT_EQ(RunCommand({FLEETCTL_BIN, "job", "frobnicate"}, c.dir()).exit_code, 2);
  EXPECT_EQ(RunCommand({FLEETCTL_BIN}, c.dir()).exit_code, 2);
  EXPECT_EQ(RunCommand({FLEET_COORDINATOR_BIN, "--no-such-flag"}, c.dir()).exit_code, 2);
  EXPECT_EQ(RunCommand({FLEET_CLIENT_BIN}, c.dir()).exit_code, 2);  // --config is required
  auto ttl = RunCommand({FLEETCTL_BIN, "token", "create", "--ttl", "soon"}, c.dir());
  EXPECT_EQ(ttl.exit_code, 2) << ttl.output;
  EXPECT_NE(ttl.output.find("duration 'soon'"), std::string::npos) << ttl.output;
  auto cert_ttl = RunCommand({FLEET_COORDINATOR_BIN, "--device-cert-ttl", "7 days"}, c.dir());
  EXPECT_EQ(cert_ttl.exit_code, 2) << cert_ttl.output;
  EXPECT_NE(cert_ttl.output.find("--device-cert-ttl"), std::string::npos) << cert_ttl.output;
}

TEST(Cli, TlsIsTheDefaultAndInsecureWarns) {
  Cluster c;
  auto r = RunCommand({FLEET_COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--state-dir", c.dir() + "/s"},
               c.dir(), std::chrono::seconds(20));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--insecure"), std::string::npos) << r.output;

  Process p;
  ASSERT_TRUE(p.Start({FLEET_COORDINATOR_BIN, "--insecure", "--listen", "127.0.0.1:0",
                       "--state-dir", c.dir() + "/s", "--port-file", c.dir() + "/p"},
                      c.dir() + "/insecure.log"));
  ASSERT_TRUE(WaitFor([&] { return !ReadAll(c.dir() + "/p").empty(); }, std::chrono::seconds(20)));
  EXPECT_NE(p.Log().find("WARN"), std::string::npos);
  EXPECT_NE(p.Log().find("PLAINTEXT"), std::string::npos);
  std::string addr = "127.0.0.1:" + std::to_string(std::stoi(ReadAll(c.dir() + "/p")));
  auto list = RunCommand({FLEETCTL_BIN, "--insecure", "--coordinator", addr, "job", "list"}, c.dir());
  EXPECT_EQ(list.exit_code, 0) << list.output;
  // fleetctl without a CA and without --insecure refuses rather than guessing.
  auto refused = RunCommand({FLEETCTL_BIN, "--coordinator", addr, "job", "list"}, c.dir());
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  p.Kill(SIGTERM);
  EXPECT_EQ(p.Wait(std::chrono::seconds(10)), 0) << "SIGTERM is a clean shutdown";
}

TEST(Cli, WrongCaIsRefused) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  Cluster other;  // a different throwaway CA
  auto r = RunCommand({FLEETCTL_BIN, "--coordinator", c.address(), "--ca-cert", other.ca(), "--timeout",
                "5", "job", "list"},
               c.dir());
  EXPECT_EQ(r.exit_code, 1) << r.output;
}

TEST(Cli, BadJobSpecExitsTwoNamingTheKey) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  std::string job = c.WriteJob("bad", 2, 1, 1, "local_epochs: 3\n");
  auto r = c.Fleetctl({"job", "submit", "-f", job});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(job), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("unknown key 'local_epochs'"), std::string::npos) << r.output;
  auto missing = c.Fleetctl({"job", "submit", "-f", c.dir() + "/nope.yaml"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.output.find("nope.yaml"), std::string::npos);
  // Nothing was created by the failed submissions.
  EXPECT_EQ(c.Fleetctl({"job", "list"}).output.find("job-"), std::string::npos);
}

TEST(Cli, UnknownJobAndUnreachableCoordinatorExitOne) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  auto r = c.Fleetctl({"job", "get", "job-doesnotexist"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("no job with id 'job-doesnotexist'"), std::string::npos) << r.output;
  auto down = RunCommand({FLEETCTL_BIN, "--coordinator", "127.0.0.1:" + std::to_string(FreePort()),
                   "--ca-cert", c.ca(), "--timeout", "2", "job", "list"},
                  c.dir());
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_NE(down.output.find("is fleet-coordinator running"), std::string::npos) << down.output;
}

TEST(Cli, BadClientConfigExitsTwoNamingTheKey) {
  Cluster c;
  std::string path = c.HarClientConfig(1, true, "127.0.0.1:1");
  std::string text = ReadAll(path) + "gpu: true\n";
  std::ofstream(path) << text;
  auto r = RunCommand({FLEET_CLIENT_BIN, "--config", path}, c.dir());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("unknown key 'gpu'"), std::string::npos) << r.output;
}

TEST(Cli, BadControlBlockExitsTwoNamingTheProblem) {
  Cluster c;
  const std::string head = R"(control:
  model_dataset: uci-har
  outputs: [a, b]
  schema: {fields: [{name: Light}]}
)";
  struct Case {
    std::string yaml, expect;
  };
  const Case cases[] = {
      {head + "  replay: {path: /nonexistent/room.csv}\n",
       "replay file /nonexistent/room.csv cannot be opened"},
      {head + "  mqtt: {broker: \"127.0.0.1:1883\", topics: [a]}\n  rules: [{name: r, when: "
              "\"c > 1\", publish: {topic: t, command: {x: 1}}}]\n",
       "unknown signal 'c'"},
      {head + "  mqtt: {broker: \"127.0.0.1\", topics: [a]}\n", "expected host:port"},
  };
  for (const Case& k : cases) {
    c.set_client_config_extra(1, k.yaml);
    auto r = RunCommand({FLEET_CLIENT_BIN, "--config", c.HarClientConfig(1, true, "127.0.0.1:1")},
                        c.dir());
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find(k.expect), std::string::npos) << r.output;
  }
}

TEST(Cli, ClientCheckLoadsRealData) {
  Cluster c;
  auto r = RunCommand({FLEET_CLIENT_BIN, "--check", "--config", c.HarClientConfig(1, true, "127.0.0.1:1")},
               c.dir());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("278 train, 69 validation"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace fleet::testing
