#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <memory>

#include "coordinator/authority.h"
#include "crypto/enroll_token.h"
#include "crypto/pki.h"

namespace fleet::testing {

TcpProxy::TcpProxy(int target_port) : target_(target_port) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  listen(listen_fd_, 64);
  socklen_t len = sizeof addr;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  accept_ = std::thread([this] { AcceptLoop(); });
}

TcpProxy::~TcpProxy() {
  stop_ = true;
  shutdown(listen_fd_, SHUT_RDWR);
  accept_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : fds_) shutdown(fd, SHUT_RDWR);
  }
  for (auto& t : threads_) t.join();
  for (int fd : fds_) close(fd);
  close(listen_fd_);
}

void TcpProxy::AcceptLoop() {
  while (!stop_) {
    int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      if (stop_) return;
      continue;
    }
    int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(target_));
    if (connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      close(client);
      close(server);
      continue;
    }
    auto sent = std::make_shared<std::atomic<size_t>>(0);
    std::lock_guard<std::mutex> lock(mu_);
    fds_.push_back(client);
    fds_.push_back(server);
    threads_.emplace_back([this, client, server, sent] { Pump(client, server, true, sent); });
    threads_.emplace_back([this, client, server, sent] { Pump(server, client, false, sent); });
  }
}

void TcpProxy::Pump(int from, int to, bool upstream, std::shared_ptr<std::atomic<size_t>> sent) {
  char buf[16384];
  for (;;) {
    ssize_t n = read(from, buf, sizeof buf);
    if (n <= 0) break;
    if (upstream) {
      *sent += static_cast<size_t>(n);
      size_t limit = cut_after_.load();
      if (limit > 0 && *sent > limit && cut_after_.compare_exchange_strong(limit, 0)) {
        cuts_++;
        if (client_side_only_) {
          // The client sees its connection die; the coordinator's side (`to`) stays open, and
          // the downstream pump keeps draining it until the coordinator closes it.
          shutdown(from, SHUT_RDWR);
          return;
        }
        break;  // the bytes of this read are lost, like the rest of the stream
      }
    }
    for (ssize_t off = 0; off < n;) {
      // MSG_NOSIGNAL: after a cut the other pump may have shut `to` down; a plain write() would
      // raise SIGPIPE and kill the whole test binary.
      ssize_t w = send(to, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
      if (w <= 0) {
        off = n;
        n = -1;
        break;
      }
      off += w;
    }
    if (n < 0 && !(client_side_only_ && !upstream)) break;  // silent side: keep draining
  }
  shutdown(from, SHUT_RDWR);
  shutdown(to, SHUT_RDWR);
}

v1::EnrollRequest MakeEnrollRequest(const std::string& device_id, const std::string& token,
                                    const std::string& csr_pem) {
  v1::EnrollRequest req;
  req.set_protocol_version(kProtocolVersion);
  req.set_device_id(device_id);
  req.set_csr_pem(csr_pem);
  StatusOr<crypto::ParsedToken> parsed = crypto::ParseToken(token);
  StatusOr<std::string> der = crypto::CsrDer(csr_pem);
  if (parsed.ok() && der.ok()) {
    req.set_token_id(parsed->id);
    req.set_token_proof(crypto::EnrollProof(parsed->secret, parsed->id, device_id, *der));
  } else {
    const size_t start = token.rfind("fleet1_", 0) == 0 ? 7 : 0;
    req.set_token_id(token.substr(start, token.find('_', start) - start));
    req.set_token_proof(std::string(crypto::kTokenProofBytes, '\0'));
  }
  return req;
}

v1::RenewRequest MakeRenewRequest(const std::string& device_id, const std::string& csr_pem,
                                  const ClientTlsOptions& current) {
  v1::RenewRequest req;
  req.set_protocol_version(kProtocolVersion);
  req.set_device_id(device_id);
  req.set_csr_pem(csr_pem);
  const std::string serial = crypto::ParseCertificate(current.cert_pem)->serial;
  req.set_possession_signature(*crypto::SignWithKey(
      current.key_pem, crypto::RenewalMessage(device_id, *crypto::CsrDer(csr_pem), serial)));
  return req;
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

Cluster::Cluster(ClusterOptions options) : options_(options) {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base ? base : "/tmp") + "/fleet-it.XXXXXX";
  dir_ = mkdtemp(tmpl.data());
  if (options_.separate_ca) {
    RunCommand({FLEET_COORDINATOR_BIN, "ca", "init", "--state-dir", ca_state_dir(),
                "--coordinator-state-dir", dir_ + "/coordinator"},
               dir_);
  } else {
    RunCommand({FLEET_COORDINATOR_BIN, "init", "--state-dir", dir_ + "/coordinator"}, dir_);
  }
}

bool Cluster::StartCa(std::vector<std::string> extra) {
  std::string port_file = dir_ + "/ca-port";
  std::remove(port_file.c_str());
  std::vector<std::string> argv{FLEET_COORDINATOR_BIN, "ca",           "serve",
                                "--state-dir",         ca_state_dir(), "--listen",
                                "127.0.0.1:0",         "--port-file",  port_file};
  argv.insert(argv.end(), extra.begin(), extra.end());
  if (!ca_.Start(argv, dir_ + "/ca.log")) return false;
  bool up = WaitFor([&] { return !ReadAll(port_file).empty() || !ca_.Running(); },
                    std::chrono::seconds(20));
  if (!up || ReadAll(port_file).empty()) return false;
  ca_port_ = std::stoi(ReadAll(port_file));
  return true;
}

CommandResult Cluster::CaCommand(std::vector<std::string> args) {
  std::vector<std::string> argv{FLEET_COORDINATOR_BIN, "ca"};
  argv.insert(argv.end(), args.begin(), args.end());
  for (const std::string& a :
       {std::string("--state-dir"), ca_state_dir(), std::string("--ca"), ca_address()}) {
    argv.push_back(a);
  }
  return RunCommand(argv, dir_);
}

ClientTlsOptions Cluster::DeviceTls(const std::string& device_id, int64_t lifetime_s,
                                    const crypto::SigningKey* secagg_key) const {
  // The coordinator's own issuance path, minus enrollment.
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  const crypto::SigningKey throwaway = crypto::SigningKey::Generate();
  ClientTlsOptions tls;
  tls.ca_pem = ReadAll(ca());
  tls.key_pem = *crypto::GenerateP256Key();
  auto csr = crypto::ParseCsr(*crypto::MakeCsr(
      tls.key_pem, device_id,
      crypto::ToString((secagg_key != nullptr ? *secagg_key : throwaway).public_key())));
  tls.cert_pem = *(*Authority::Load(options_.separate_ca ? ca_state_dir() : dir_ + "/coordinator",
                                    /*ca_key=*/true, /*model_key=*/!options_.separate_ca))
                      ->IssueDeviceCertificate(*csr, device_id, now, lifetime_s);
  return tls;
}

ClientTlsOptions Cluster::AdminTls() const {
  ClientTlsOptions tls;
  tls.ca_file = ca();
  tls.cert_file = pki() + "/admin.pem";
  tls.key_file = pki() + "/admin.key";
  return tls;
}

Cluster::~Cluster() {
  for (auto& c : clients_) c->Kill(SIGKILL);
  coordinator_.Kill(SIGKILL);
  ca_.Kill(SIGKILL);
  if (std::getenv("FLEET_KEEP_TEST_DIRS") == nullptr) {
    std::system(("rm -rf '" + dir_ + "'").c_str());
  }
}

bool Cluster::StartCoordinator(std::vector<std::string> extra, int port) {
  std::string port_file = dir_ + "/port";
  std::remove(port_file.c_str());
  std::vector<std::string> argv{FLEET_COORDINATOR_BIN,
                                "--listen",
                                "127.0.0.1:" + std::to_string(port),
                                "--port-file",
                                port_file,
                                "--state-dir",
                                dir_ + "/coordinator"};
  // Fast liveness for tests, unless the test sets its own.
  if (std::find(extra.begin(), extra.end(), "--heartbeat-interval-ms") == extra.end()) {
    for (const char* a : {"--heartbeat-interval-ms", "300", "--offline-after-ms", "1500"}) {
      argv.push_back(a);
    }
  }
  if (options_.separate_ca) {
    argv.push_back("--ca-endpoint");
    argv.push_back(ca_address());
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.insert(argv.begin(), coordinator_wrapper_.begin(), coordinator_wrapper_.end());
  if (!coordinator_.Start(argv, dir_ + "/coordinator.log")) return false;
  bool up = WaitFor([&] { return !ReadAll(port_file).empty() || !coordinator_.Running(); },
                    std::chrono::seconds(20));
  if (!up || ReadAll(port_file).empty()) return false;
  port_ = std::stoi(ReadAll(port_file));
  if (ReadAll(bootstrap()).empty()) {
    // With a separate CA, tokens are made there.
    std::vector<std::string> create{"token", "create", "--uses",  "1000",
                                    "--ttl", "1h",     "--label", "integration-test"};
    CommandResult t = options_.separate_ca ? CaCommand(create) : Fleetctl(create);
    if (t.exit_code != 0) return false;
    size_t at = t.output.find("fleet1_");  // stdout; the notice on stderr may come first
    if (at == std::string::npos) return false;
    std::string token = t.output.substr(at, t.output.find('\n', at) - at);
    std::ofstream(bootstrap()) << "coordinator: " << address() << "\n"
                               << "ca_cert_file: " << ca() << "\n"
                               << "token: " << token << "\n";
  }
  return true;
}

std::string Cluster::HarClientConfig(int subject, bool train, const std::string& address) {
  std::string path = dir_ + "/client-" + std::to_string(subject) + ".yaml";
  std::ofstream out(path);
  out << "coordinator: " << (address.empty() ? this->address() : address) << "\n"
      << "device_id: har-subject-" << subject << "\n"
      << "bootstrap: " << bootstrap() << "\n"
      << "state_dir: " << dir_ << "/device-" << subject << "\n"
      << "poll_wait_ms: 1000\n"
      << (allow_plain_rounds_ ? "allow_plain_rounds: true\n" : "") << "datasets:\n"
      << "  - name: uci-har\n"
      << "    role: " << (train ? "train" : "evaluate") << "\n"
      << (train ? "    validation_fraction: 0.2\n" : "") << "    label_offset: -1\n"
      << "    files:\n"
      << "      - path: " << FLEET_HAR_DIR << "/subject-" << subject << ".txt\n"
      << "        format: whitespace\n"
      << "        subject: 0\n"
      << "        label: 1\n"
      << "        features: rest\n";
  auto extra = client_config_extra_.find(subject);
  if (extra != client_config_extra_.end()) out << extra->second;
  return path;
}

Process& Cluster::StartHarClient(int subject, bool train, const std::string& address,
                                const std::vector<std::string>& extra_args) {
  std::string config = HarClientConfig(subject, train, address);
  clients_.push_back(std::make_unique<Process>());
  std::vector<std::string> argv = {FLEET_CLIENT_BIN, "--config", config};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  clients_.back()->Start(argv,
                         dir_ + "/client-" + std::to_string(subject) + ".log");
  return *clients_.back();
}

std::string Cluster::WriteJob(const std::string& name, int rounds, int min_clients, int target,
                              const std::string& extra) {
  std::string path = dir_ + "/" + name + ".yaml";
  std::ofstream out(path);
  out << "name: " << name << "\n"
      << "dataset: uci-har\n"
      << "model: {type: mlp, task: classification, input_dim: 561, hidden: [32], output_dim: 6}\n"
      << "train: {optimizer: adam, learning_rate: 0.002, local_epochs: 1, batch_size: 32}\n"
      << "rounds: " << rounds << "\n"
      << "min_clients: " << min_clients << "\n"
      << "target_clients: " << target << "\n"
      << (extra.find("round_deadline_s:") == std::string::npos ? "round_deadline_s: 60\n" : "")
      << extra;
  return path;
}

int Cluster::OnlineDevices() {
  std::string out = Fleetctl({"device", "list"}).output;
  int n = 0;
  for (size_t p = out.find(" online "); p != std::string::npos; p = out.find(" online ", p + 1)) {
    ++n;
  }
  return n;
}

CommandResult Cluster::Fleetctl(std::vector<std::string> args) {
  std::vector<std::string> argv{FLEETCTL_BIN, "--coordinator", address(), "--ca-cert", ca(),
                                "--cert", pki() + "/admin.pem", "--key", pki() + "/admin.key"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, dir_);
}

}  // namespace fleet::testing
