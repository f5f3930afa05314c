// Integration-test harness: real fleet-coordinator / fleet-client / fleetctl processes on
// 127.0.0.1 with ports chosen by the kernel (port 0, read back from --port-file), a throwaway
// TLS CA, and per-subject UCI HAR files. Every process is killed when its object dies.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/grpc_util.h"
#include "crypto/keys.h"
#include "proto/fleet.pb.h"

extern char** environ;

namespace fleet::testing {

inline std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class Process {
 public:
  Process() = default;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process() { Kill(SIGKILL); }

  // Starts argv[0] with stdout and stderr appended to `log`.
  bool Start(const std::vector<std::string>& argv, const std::string& log) {
    log_ = log;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int rc = posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    return rc == 0;
  }

  void Kill(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    if (sig == SIGKILL) Wait(std::chrono::seconds(10));
  }

  // Exit code, or -signal, or -1000 on timeout (the process keeps running).
  int Wait(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return exit_code_;
    auto end = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      int status = 0;
      pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
        return exit_code_;
      }
      if (std::chrono::steady_clock::now() > end) return -1000;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  pid_t pid() const { return pid_; }
  // Does not reap an exited process (WNOWAIT), so a later Wait still returns its exit code.
  bool Running() const {
    if (pid_ <= 0) return false;
    siginfo_t info{};
    return waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           info.si_pid == 0;
  }
  std::string Log() const { return ReadAll(log_); }

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
  std::string log_;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr interleaved
};

inline CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& scratch_dir,
                         std::chrono::seconds timeout = std::chrono::seconds(120)) {
  static int counter = 0;
  std::string log = scratch_dir + "/cmd-" + std::to_string(++counter) + ".log";
  Process p;
  CommandResult r;
  if (!p.Start(argv, log)) return r;
  r.exit_code = p.Wait(timeout);
  r.output = ReadAll(log);
  return r;
}

// Waits until `pred` holds, polling; false after `timeout`.
template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return pred();
}

// Every integer value of `key` in (fleetctl -o json) output, in order; quoted int64s included.
inline std::vector<int> JsonInts(const std::string& json, const std::string& key) {
  std::vector<int> out;
  std::regex re("\"" + key + "\": \"?([0-9]+)");
  for (auto it = std::sregex_iterator(json.begin(), json.end(), re); it != std::sregex_iterator();
       ++it) {
    out.push_back(std::stoi((*it)[1]));
  }
  return out;
}

// An EnrollRequest as a protocol v3 device makes it from a bootstrap token: the token's id and a
// proof made with its secret over (device id, CSR DER). A malformed token gives the text between
// "fleet1_" and the next '_' as the id and a zero proof, which the registrar refuses as malformed
// (or unknown).
v1::EnrollRequest MakeEnrollRequest(const std::string& device_id, const std::string& token,
                                    const std::string& csr_pem);
// A RenewRequest for `csr_pem`, signed with the key of the certificate being renewed.
v1::RenewRequest MakeRenewRequest(const std::string& device_id, const std::string& csr_pem,
                                  const ClientTlsOptions& current);

// A free loopback port (bound, read back, released): for tests that must know the port before
// the coordinator starts.
int FreePort();

// A loopback TCP proxy the test controls, to cut a client's network: 127.0.0.1:port() forwards
// to 127.0.0.1:target. After CutAfterUpstreamBytes(n), the first connection that has carried more
// than n bytes client->server is shut down in both directions (a network failure mid-upload);
// later connections pass.
class TcpProxy {
 public:
  explicit TcpProxy(int target_port);
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;
  int port() const { return port_; }
  void CutAfterUpstreamBytes(size_t n) { cut_after_ = n; }
  // From now on a cut closes only the client's side: the coordinator's side of that connection
  // stays open and silent, which is how a dropped link looks to it until TCP gives up.
  void CutClientSideOnly() { client_side_only_ = true; }
  int cuts() const { return cuts_; }

 private:
  void AcceptLoop();
  void Pump(int from, int to, bool upstream, std::shared_ptr<std::atomic<size_t>> sent);
  int target_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<size_t> cut_after_{0};
  std::atomic<bool> client_side_only_{false};
  std::atomic<int> cuts_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
  std::thread accept_;
};

struct ClusterOptions {
  // The CA in a process of its own (`fleet-coordinator ca init` + `ca serve`, state in dir/ca);
  // the coordinator's state directory has no CA key and it is started with --ca-endpoint.
  bool separate_ca = false;
};

class Cluster {
 public:
  explicit Cluster(ClusterOptions options = {});
  ~Cluster();

  const std::string& dir() const { return dir_; }
  // The fleet PKI made by `fleet-coordinator init` in the constructor.
  std::string pki() const { return dir_ + "/coordinator/pki"; }
  std::string ca() const { return pki() + "/ca.pem"; }
  // Bootstrap file for devices (coordinator address, pinned CA, a 1000-use token), written the
  // first time the coordinator starts.
  std::string bootstrap() const { return dir_ + "/bootstrap.yaml"; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }

  // Starts the coordinator with TLS on port 0 (or `port`) and waits until it serves. With a
  // separate CA, StartCa first.
  bool StartCoordinator(std::vector<std::string> extra = {}, int port = 0);
  // Separate CA: starts `fleet-coordinator ca serve` on port 0 and waits until it serves.
  bool StartCa(std::vector<std::string> extra = {});
  std::string ca_state_dir() const { return dir_ + "/ca"; }
  std::string ca_address() const { return "127.0.0.1:" + std::to_string(ca_port_); }
  Process& ca_process() { return ca_; }
  // `fleet-coordinator ca ARGS --state-dir CA_STATE_DIR --ca CA_ADDRESS` (the CA admin's tools).
  CommandResult CaCommand(std::vector<std::string> args);
  // Runs later coordinators under `wrapper` (argv prefix, e.g. unshare + mount); {} for none.
  void set_coordinator_wrapper(std::vector<std::string> wrapper) {
    coordinator_wrapper_ = std::move(wrapper);
  }
  // The coordinator's state directory.
  std::string state_dir() const { return dir_ + "/coordinator"; }
  Process& coordinator() { return coordinator_; }

  // Writes a client config for HAR subject `subject` and starts fleet-client with it.
  Process& StartHarClient(int subject, bool train = true, const std::string& address = "",
                          const std::vector<std::string>& extra_args = {});

  std::string HarClientConfig(int subject, bool train, const std::string& address);
  // YAML appended to subject's client config (labels, eligibility sources, ...).
  void set_client_config_extra(int subject, std::string yaml) {
    client_config_extra_[subject] = std::move(yaml);
  }
  // Devices refuse TRAIN tasks of jobs with secure aggregation off unless their config says
  // `allow_plain_rounds: true`. Most tests run plain jobs to test orchestration, so the
  // harness's clients say so explicitly; tests of the default turn it off before starting them.
  void set_allow_plain_rounds(bool allow) { allow_plain_rounds_ = allow; }
  // Writes a job spec derived from configs/jobs/har-mlp.yaml with the given overrides.
  std::string WriteJob(const std::string& name, int rounds, int min_clients, int target,
                       const std::string& extra = "");

  // Devices `fleetctl device list` shows online.
  int OnlineDevices();
  // fleetctl with the admin certificate.
  CommandResult Fleetctl(std::vector<std::string> args);
  // mTLS options for a device certificate issued directly by the test's CA (no enrollment). The
  // certificate certifies `secagg_key` as the device's SecAgg signing key (a throwaway key when
  // null: such a device can join, but only without a key).
  ClientTlsOptions DeviceTls(const std::string& device_id, int64_t lifetime_s = 3600,
                             const crypto::SigningKey* secagg_key = nullptr) const;
  ClientTlsOptions AdminTls() const;

 private:
  const ClusterOptions options_;
  std::string dir_;
  int port_ = 0, ca_port_ = 0;
  Process coordinator_, ca_;
  std::vector<std::string> coordinator_wrapper_;
  std::map<int, std::string> client_config_extra_;
  bool allow_plain_rounds_ = true;
  std::vector<std::unique_ptr<Process>> clients_;
};

}  // namespace fleet::testing
