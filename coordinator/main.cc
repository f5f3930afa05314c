// fleet-coordinator: serves the Device and Admin gRPC services and runs federated jobs.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <mutex>

#include "common/clock.h"
#include "common/config.h"
#include "common/file_util.h"
#include "common/grpc_util.h"
#include "common/log.h"
#include "common/service.h"
#include "common/signals.h"
#include "coordinator/ca_service.h"
#include "coordinator/coordinator.h"
#include "coordinator/services.h"
#include "coordinator/settings.h"
#include "proto/fleet.grpc.pb.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

using Settings = fleet::CoordinatorSettings;

}  // namespace

int main(int argc, char** argv) {
  if (fleet::Status tls = fleet::RequireTls13(); !tls.ok()) {
    std::cerr << "fleet-coordinator: " << tls.message() << "\n";
    return 1;
  }
  CLI::App app{
      "fleet-coordinator: distributes federated learning rounds to fleetfl devices, aggregates "
      "their updates and serves the admin API used by fleetctl."};
  app.set_version_flag("--version", "fleet-coordinator 0.1.0 (protocol v" +
                                        std::to_string(fleet::kProtocolVersion) + ")");
  std::string config_path;
  Settings cli;
  app.add_option("-c,--config", config_path, "YAML config file (flags override it)");
  auto* listen = app.add_option("--listen", cli.listen, "host:port to serve on (port 0: any free)");
  auto* state = app.add_option("--state-dir", cli.state_dir,
                               "directory for coordinator.db and checkpoints");
  auto* cert = app.add_option("--tls-cert", cli.tls.cert_file, "PEM server certificate chain");
  auto* key = app.add_option("--tls-key", cli.tls.key_file, "PEM server private key");
  bool insecure = false;
  app.add_flag("--insecure", insecure,
               "serve plaintext gRPC without TLS (development only; prints a warning)");
  auto* hb = app.add_option("--heartbeat-interval-ms", cli.heartbeat_interval_ms,
                            "heartbeat period asked of devices");
  auto* off = app.add_option("--offline-after-ms", cli.offline_after_ms,
                             "a device silent this long is offline and dropped from its round");
  auto* mm = app.add_option("--max-message-mb", cli.max_message_mb,
                            "largest gRPC message accepted or sent");
  auto* gm = app.add_option("--grpc-memory-mb", cli.grpc_memory_mb,
                            "transport buffer memory before gRPC reclaims idle connections' "
                            "buffers (0: unlimited)");
  auto* si = app.add_option("--stream-idle-timeout-s", cli.stream_idle_timeout_s,
                            "end an upload that sends nothing (header included) for this long, "
                            "and a job watch whose admin stops reading");
  auto* ut = app.add_option("--upload-timeout-s", cli.upload_timeout_s,
                            "longest upload stream (also never past its round's deadline)");
  auto* wt = app.add_option("--watch-timeout-s", cli.watch_timeout_s,
                            "longest job watch stream (fleetctl reconnects)");
  auto* eb = app.add_option("--enroll-burst", cli.enroll_burst,
                            "enrollment requests one client address may make at once");
  auto* er = app.add_option("--enroll-rate-per-minute", cli.enroll_rate_per_minute,
                            "and then per minute (more are refused with a time to retry)");
  auto* ea = app.add_option("--enroll-audit-interval-s", cli.enroll_audit_interval_s,
                            "refused enrollments of one reason and client address within this "
                            "interval share one audit record with their count");
  auto* ll = app.add_option("--log-level", cli.log_level, "debug|info|warn|error");
  app.add_option("--port-file", cli.port_file,
                 "write the bound port here once serving (for scripts using port 0)");
  auto* ttl = app.add_option("--device-cert-ttl", cli.device_cert_ttl,
                             "lifetime of device certificates issued at enrollment (e.g. 7d, 12h)");
  int64_t clock_offset_s = 0;
  // Hidden (empty group), test-only: shifts the clock of certificate decisions.
  app.add_option("--clock-offset-s", clock_offset_s)->group("");

  auto* init = app.add_subcommand(
      "init", "create the fleet PKI in --state-dir/pki once: CA (P-256), server certificate, admin "
              "client certificate, model-signing key (Ed25519); refuses to overwrite a CA");
  std::vector<std::string> init_names{"localhost"}, init_ips{"127.0.0.1"};
  init->add_option("--server-name", init_names,
                   "DNS names in the server certificate (repeatable)")
      ->capture_default_str();
  init->add_option("--server-ip", init_ips, "IP addresses in the server certificate (repeatable)")
      ->capture_default_str();
  bool if_missing = false;
  init->add_flag("--if-missing", if_missing,
                 "exit 0 without touching anything when the PKI already exists (for "
                 "ExecStartPre= on first boot)");
  init->fallthrough();  // `init --state-dir DIR`
  auto* ca_ep = app.add_option("--ca-endpoint", cli.ca_endpoint,
                               "host:port of a separate CA (`fleet-coordinator ca serve`): this "
                               "coordinator then holds no CA key and no tokens");
  auto* ca_sn = app.add_option("--ca-server-name", cli.ca_server_name,
                               "name expected in the CA's certificate, when it differs from the "
                               "endpoint's host");

  // `fleet-coordinator ca ...`: a CA apart from the coordinator (docs/security.md, Deployments).
  auto* ca = app.add_subcommand(
      "ca",
      "a certificate authority in a process (or on a host) of its own: it holds the CA key "
      "and the bootstrap tokens, and authorizes every certificate itself");
  ca->require_subcommand(1);
  ca->fallthrough();
  auto* ca_init = ca->add_subcommand(
      "init",
      "create the CA's PKI in --state-dir/pki and the coordinator's (without the CA key) "
      "in --coordinator-state-dir/pki; refuses to overwrite either");
  std::string ca_coordinator_dir;
  std::vector<std::string> ca_names{"localhost"}, ca_ips{"127.0.0.1"}, co_names{"localhost"},
      co_ips{"127.0.0.1"};
  ca_init
      ->add_option("--coordinator-state-dir", ca_coordinator_dir,
                   "the coordinator's state directory (move it to the coordinator's host)")
      ->required();
  ca_init->add_option("--server-name", ca_names, "DNS names in the CA's certificate")
      ->capture_default_str();
  ca_init->add_option("--server-ip", ca_ips, "IP addresses in the CA's certificate")
      ->capture_default_str();
  ca_init->add_option("--coordinator-name", co_names, "DNS names in the coordinator's certificate")
      ->capture_default_str();
  ca_init->add_option("--coordinator-ip", co_ips, "IP addresses in the coordinator's certificate")
      ->capture_default_str();
  ca_init->fallthrough();
  fleet::CaServeOptions ca_serve_options;
  std::string ca_ttl = "7d";
  uint32_t ca_audit_interval_s = 60;
  auto* ca_serve = ca->add_subcommand("serve", "serve the CA to coordinators and CA admins (mTLS)");
  ca_serve->add_option("--listen", ca_serve_options.listen, "host:port (port 0: any free)")
      ->capture_default_str();
  ca_serve->add_option("--port-file", ca_serve_options.port_file,
                       "write the bound port here once serving");
  ca_serve->add_option("--device-cert-ttl", ca_ttl, "lifetime of device certificates")
      ->capture_default_str();
  ca_serve
      ->add_option("--enroll-audit-interval-s", ca_audit_interval_s,
                   "refused enrollments of one reason and address within this interval share "
                   "one audit record")
      ->capture_default_str();
  ca_serve->fallthrough();
  fleet::CaAdminCommand ca_admin;
  auto* ca_token = ca->add_subcommand("token", "bootstrap tokens, made and kept at the CA");
  ca_token->require_subcommand(1);
  ca_token->fallthrough();
  std::string ca_token_ttl = "24h";
  auto* ca_tcreate = ca_token->add_subcommand("create", "create a token; prints it once");
  ca_tcreate->add_option("--ttl", ca_token_ttl, "lifetime, e.g. 90m, 24h, 7d")
      ->capture_default_str();
  ca_tcreate->add_option("--uses", ca_admin.spec.uses, "how many enrollments it allows")
      ->capture_default_str();
  ca_tcreate->add_option("--label", ca_admin.spec.label, "free text, e.g. site=ward3");
  auto* ca_bind = ca_tcreate->add_option("--device-id", ca_admin.spec.device_id,
                                         "the token enrolls only this device id");
  ca_tcreate
      ->add_option("--id-prefix", ca_admin.spec.id_prefix,
                   "the token enrolls only device ids that start with this")
      ->excludes(ca_bind);
  ca_tcreate->fallthrough();
  auto* ca_tlist = ca_token->add_subcommand("list", "list tokens (never their secrets)");
  ca_tlist->fallthrough();
  auto* ca_trevoke = ca_token->add_subcommand("revoke", "revoke a token by id");
  ca_trevoke->add_option("id", ca_admin.id, "token id (the 16 hex digits after fleet1_)")
      ->required();
  ca_trevoke->fallthrough();
  auto* ca_device = ca->add_subcommand("device", "devices' certificates at the CA");
  ca_device->require_subcommand(1);
  ca_device->fallthrough();
  auto* ca_dreset = ca_device->add_subcommand(
      "reset",
      "forget a device's current certificate at the CA so it may enroll again (the "
      "coordinator refuses the old one once it learns of it: prefer `fleetctl device "
      "reset`, which does both)");
  ca_dreset->add_option("id", ca_admin.id, "device id")->required();
  ca_dreset->fallthrough();
  for (CLI::App* sub : {ca_tcreate, ca_tlist, ca_trevoke, ca_dreset}) {
    sub->add_option("--ca", ca_admin.endpoint, "the CA's host:port")->capture_default_str();
    sub->add_option("--ca-server-name", ca_admin.server_name,
                    "name expected in the CA's certificate");
    sub->add_flag("--json", ca_admin.json, "JSON output");
  }
  auto* audit_reset = app.add_subcommand(
      "audit-reset",
      "with the coordinator stopped: move an audit log the coordinator refused aside (kept as "
      "evidence) and start a new chain whose first record says why");
  std::string reset_reason;
  audit_reset->add_option("--reason", reset_reason, "why (goes on record)")->required();
  audit_reset->fallthrough();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }

  Settings s;
  if (!config_path.empty()) {
    fleet::Status st = fleet::LoadCoordinatorConfig(config_path, &s);
    if (!st.ok()) {
      std::cerr << "fleet-coordinator: " << st.message() << "\n";
      return kExitUsage;
    }
  }
  if (*listen) s.listen = cli.listen;
  if (*state) s.state_dir = cli.state_dir;
  if (*cert) s.tls.cert_file = cli.tls.cert_file;
  if (*key) s.tls.key_file = cli.tls.key_file;
  if (*hb) s.heartbeat_interval_ms = cli.heartbeat_interval_ms;
  if (*off) s.offline_after_ms = cli.offline_after_ms;
  if (*mm) s.max_message_mb = cli.max_message_mb;
  if (*gm) s.grpc_memory_mb = cli.grpc_memory_mb;
  if (*si) s.stream_idle_timeout_s = cli.stream_idle_timeout_s;
  if (*ut) s.upload_timeout_s = cli.upload_timeout_s;
  if (*wt) s.watch_timeout_s = cli.watch_timeout_s;
  if (*eb) s.enroll_burst = cli.enroll_burst;
  if (*er) s.enroll_rate_per_minute = cli.enroll_rate_per_minute;
  if (*ea) s.enroll_audit_interval_s = cli.enroll_audit_interval_s;
  if (*ll) s.log_level = cli.log_level;
  if (*ttl) s.device_cert_ttl = cli.device_cert_ttl;
  if (*ca_ep) s.ca_endpoint = cli.ca_endpoint;
  if (*ca_sn) s.ca_server_name = cli.ca_server_name;
  s.port_file = cli.port_file;
  s.tls.insecure = insecure;

  fleet::LogLevel level;
  if (!fleet::ParseLogLevel(s.log_level, &level)) {
    std::cerr << "fleet-coordinator: log level '" << s.log_level
              << "' is not one of debug, info, warn, error\n";
    return kExitUsage;
  }
  if (s.max_message_mb == 0 || s.max_message_mb > 1024 || s.heartbeat_interval_ms == 0 ||
      s.offline_after_ms <= s.heartbeat_interval_ms) {
    std::cerr << "fleet-coordinator: need 1 <= max_message_mb <= 1024, heartbeat_interval_ms "
                 ">= 1 and offline_after_ms > heartbeat_interval_ms\n";
    return kExitUsage;
  }
  if (s.stream_idle_timeout_s == 0 || s.upload_timeout_s == 0 || s.watch_timeout_s == 0) {
    std::cerr << "fleet-coordinator: stream_idle_timeout_s, upload_timeout_s and "
                 "watch_timeout_s must be at least 1 (a stream without a bound can be held "
                 "forever)\n";
    return kExitUsage;
  }
  if (s.enroll_burst == 0 || s.enroll_rate_per_minute == 0 || s.enroll_audit_interval_s == 0) {
    std::cerr << "fleet-coordinator: enroll_burst, enroll_rate_per_minute and "
                 "enroll_audit_interval_s must be at least 1\n";
    return kExitUsage;
  }
  fleet::SetLogLevel(level);
  fleet::SetLogComponent("coordinator");
  auto cert_ttl = fleet::ParseDurationSeconds(s.device_cert_ttl);
  if (!cert_ttl.ok()) {
    std::cerr << "fleet-coordinator: --device-cert-ttl: " << cert_ttl.status().message() << "\n";
    return kExitUsage;
  }

  if (ca->parsed()) {
    fleet::SetLogComponent("ca");
    if (!*state) {
      std::cerr << "fleet-coordinator ca: --state-dir (the CA's state directory) is required\n";
      return kExitUsage;
    }
    if (ca_init->parsed()) {
      fleet::SeparateCaOptions o;
      o.ca.dns_names = ca_names;
      o.ca.ip_addresses = ca_ips;
      o.coordinator_dns_names = co_names;
      o.coordinator_ip_addresses = co_ips;
      fleet::Status st =
          fleet::InitSeparateCa(cli.state_dir, ca_coordinator_dir, o, fleet::UnixMillis() / 1000);
      if (!st.ok()) {
        std::cerr << "fleet-coordinator ca init: " << st.message() << "\n";
        return st.code() == fleet::StatusCode::kAlreadyExists ? kExitUsage : kExitError;
      }
      fleet::PkiPaths c(cli.state_dir), d(ca_coordinator_dir);
      std::cout << "CA PKI created in " << c.dir << " (all files 0600): ca.pem, ca.key (keep it "
                << "on this host only), server.pem/.key (the CA's listener), admin.pem/.key "
                << "(CA administrator, for `ca token`), token.key, audit.key\n"
                << "coordinator PKI created in " << d.dir << " without the CA key: ca.pem, "
                << "server.pem/.key, admin.pem/.key (for fleetctl), model-signing.key, "
                << "audit.key, ca-client.pem/.key (its identity towards the CA). Move "
                << ca_coordinator_dir << " to the coordinator's host and start it with "
                << "--ca-endpoint HOST:PORT\n";
      return kExitOk;
    }
    if (ca_serve->parsed()) {
      auto lifetime = fleet::ParseDurationSeconds(ca_ttl);
      if (!lifetime.ok() || ca_audit_interval_s == 0) {
        std::cerr << "fleet-coordinator ca serve: "
                  << (lifetime.ok() ? "--enroll-audit-interval-s must be at least 1"
                                    : "--device-cert-ttl: " + lifetime.status().message())
                  << "\n";
        return kExitUsage;
      }
      ca_serve_options.state_dir = cli.state_dir;
      ca_serve_options.device_cert_lifetime_s = *lifetime;
      ca_serve_options.refusal_interval = std::chrono::seconds(ca_audit_interval_s);
      return fleet::RunCaServer(ca_serve_options);
    }
    ca_admin.state_dir = cli.state_dir;
    if (ca_tcreate->parsed()) {
      auto parsed = fleet::ParseDurationSeconds(ca_token_ttl);
      if (!parsed.ok()) {
        std::cerr << "fleet-coordinator ca token create: --ttl: " << parsed.status().message()
                  << "\n";
        return kExitUsage;
      }
      ca_admin.spec.ttl_s = *parsed;
      ca_admin.op = fleet::CaAdminCommand::Op::kCreateToken;
    } else if (ca_tlist->parsed()) {
      ca_admin.op = fleet::CaAdminCommand::Op::kListTokens;
    } else if (ca_trevoke->parsed()) {
      ca_admin.op = fleet::CaAdminCommand::Op::kRevokeToken;
    } else {
      ca_admin.op = fleet::CaAdminCommand::Op::kResetDevice;
    }
    return fleet::RunCaAdmin(ca_admin);
  }
  if (audit_reset->parsed()) {
    auto store = fleet::OpenSqliteStore(s.state_dir + "/coordinator.db");
    if (!store.ok()) {
      std::cerr << "fleet-coordinator audit-reset: " << store.status().message() << "\n";
      return kExitError;
    }
    auto done = fleet::ResetAuditTrail(s.state_dir, store->get(), reset_reason,
                                       "operator (uid " + std::to_string(::geteuid()) + ")");
    if (!done.ok()) {
      std::cerr << "fleet-coordinator audit-reset: " << done.status().message() << "\n";
      return done.status().code() == fleet::StatusCode::kInvalidArgument ? kExitUsage : kExitError;
    }
    std::cout << "fleet-coordinator audit-reset: " << *done << "\n";
    return kExitOk;
  }
  if (init->parsed()) {
    if (if_missing && fleet::FileExists(fleet::PkiPaths(s.state_dir).ca_key)) return kExitOk;
    fleet::InitOptions io;
    io.dns_names = init_names;
    io.ip_addresses = init_ips;
    fleet::Status st = fleet::InitPki(s.state_dir, io, fleet::UnixMillis() / 1000);
    if (!st.ok()) {
      std::cerr << "fleet-coordinator init: " << st.message() << "\n";
      return st.code() == fleet::StatusCode::kAlreadyExists ? kExitUsage : kExitError;
    }
    fleet::PkiPaths p(s.state_dir);
    std::cout << "fleet PKI created in " << p.dir << " (all files 0600):\n"
              << "  " << p.ca_cert << "   CA certificate: pin it in device bootstrap files\n"
              << "  " << p.ca_key << "   CA key: keep it on this machine only\n"
              << "  " << p.server_cert << "   coordinator TLS certificate\n"
              << "  " << p.admin_cert << ", admin.key   client certificate for fleetctl\n"
              << "  " << p.model_key << "   signs every global model\n"
              << "  " << p.audit_key << "   MACs the audit log: back it up apart from it\n"
              << "  " << p.token_key << "   bootstrap token secrets derive from it\n";
    return kExitOk;
  }
  // Without explicit TLS files the PKI made by `init` is used, with mTLS for devices and admins.
  if (!s.tls.insecure) {
    fleet::PkiPaths p(s.state_dir);
    if (s.tls.cert_file.empty() && s.tls.key_file.empty()) {
      s.tls.cert_file = p.server_cert;
      s.tls.key_file = p.server_key;
    }
    s.tls.client_ca_file = p.ca_cert;
    if (!fleet::FileExists(p.ca_cert)) {
      std::cerr << "fleet-coordinator: no fleet PKI in " << p.dir
                << ": run `fleet-coordinator init --state-dir " << s.state_dir
                << "` once (or pass --insecure for a plaintext development coordinator)\n";
      return kExitUsage;
    }
  }

  std::mutex mu;
  std::condition_variable cv;
  int received_signal = 0;
  fleet::HandleTerminationSignals([&](int signo) {
    std::lock_guard<std::mutex> lock(mu);
    received_signal = signo;
    cv.notify_all();
  });

  auto creds = fleet::MakeServerCredentials(s.tls);
  if (!creds.ok()) {
    std::cerr << "fleet-coordinator: " << creds.status().message() << "\n";
    return kExitUsage;
  }
  fleet::CoordinatorOptions options;
  options.state_dir = s.state_dir;
  options.heartbeat_interval = std::chrono::milliseconds(s.heartbeat_interval_ms);
  options.offline_after = std::chrono::milliseconds(s.offline_after_ms);
  options.insecure = s.tls.insecure;
  options.device_cert_lifetime_s = *cert_ttl;
  options.clock_offset_s = clock_offset_s;
  options.enroll_audit_interval = std::chrono::seconds(s.enroll_audit_interval_s);
  if (!s.ca_endpoint.empty()) {
    fleet::PkiPaths p(s.state_dir);
    options.ca_endpoint = s.ca_endpoint;
    options.ca_tls.ca_file = p.ca_cert;
    options.ca_tls.cert_file = p.ca_client_cert;
    options.ca_tls.key_file = p.ca_client_key;
    options.ca_tls.server_name = s.ca_server_name;
    if (s.tls.insecure) {
      std::cerr << "fleet-coordinator: --ca-endpoint needs TLS (not --insecure)\n";
      return kExitUsage;
    }
    if (fleet::FileExists(p.ca_key)) {
      std::cerr << "fleet-coordinator: " << p.ca_key << " exists, but --ca-endpoint says the CA "
                << "lives apart: a coordinator of a separate CA must not hold the CA key (move "
                << "it to the CA's host)\n";
      return kExitUsage;
    }
    if (!fleet::FileExists(p.ca_client_cert)) {
      std::cerr << "fleet-coordinator: no " << p.ca_client_cert << " (the coordinator's identity "
                << "towards the CA, made by `fleet-coordinator ca init --coordinator-state-dir "
                << s.state_dir << "`)\n";
      return kExitUsage;
    }
  }
  auto coordinator = fleet::Coordinator::Create(options);
  if (!coordinator.ok()) {
    FLEET_LOG(Error) << coordinator.status().message();
    return kExitError;
  }
  fleet::StreamLimits limits;
  limits.idle = std::chrono::seconds(s.stream_idle_timeout_s);
  limits.upload = std::chrono::seconds(s.upload_timeout_s);
  limits.watch = std::chrono::seconds(s.watch_timeout_s);
  fleet::DeviceService device_service(coordinator->get(), limits);
  fleet::AdminService admin_service(coordinator->get(), limits);
  fleet::EnrollLimits enroll_limits;
  enroll_limits.burst = s.enroll_burst;
  enroll_limits.per_minute = s.enroll_rate_per_minute;
  fleet::EnrollmentService enrollment_service(coordinator->get(), enroll_limits);

  // grpc.health.v1.Health, gRPC's built-in implementation (Check and Watch): container health
  // checks, grpc_health_probe and `fleetctl health`. It needs no client
  // certificate: like Enroll it is reachable over server-authenticated TLS, and it tells only
  // SERVING or NOT_SERVING.
  grpc::EnableDefaultHealthCheckService(true);
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(s.listen, *creds, &port);
  builder.RegisterService(&device_service);
  builder.RegisterService(&admin_service);
  builder.RegisterService(&enrollment_service);
  int max_bytes = static_cast<int>(s.max_message_mb) * 1024 * 1024;
  builder.SetMaxReceiveMessageSize(max_bytes);
  builder.SetMaxSendMessageSize(max_bytes);
  // gRPC sizes each connection's next read after what it last received and keeps the buffer:
  // after a round of 1,000 model uploads that is a model-sized idle buffer per device (measured:
  // +470 MB at N=1000, D=1e5). Under a memory quota gRPC reclaims those buffers instead.
  grpc::ResourceQuota quota("fleet-coordinator");
  if (s.grpc_memory_mb > 0) {
    quota.Resize(size_t{s.grpc_memory_mb} << 20);
    builder.SetResourceQuota(quota);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    FLEET_LOG(Error) << "cannot listen on " << s.listen << " (address in use or invalid?)";
    return kExitError;
  }
  // The port opens only once the coordinator is ready to answer (database, audit log, PKI and
  // job recovery are done above), so every service is SERVING from here until shutdown begins.
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  auto set_serving = [health](bool serving) {
    if (health == nullptr) return;
    for (const char* name :
         {"", fleet::v1::Device::service_full_name(), fleet::v1::Admin::service_full_name(),
          fleet::v1::Enrollment::service_full_name()}) {
      health->SetServingStatus(name, serving);
    }
  };
  set_serving(true);
  std::string host = s.listen.substr(0, s.listen.rfind(':'));
  FLEET_LOG(Info) << "listening on " << host << ":" << port << " ("
                  << (s.tls.insecure ? "PLAINTEXT, no identities checked" : "TLS 1.3, mTLS")
                  << "), state in " << s.state_dir;
  if (!s.port_file.empty()) {
    fleet::Status st = fleet::WriteFileAtomically(s.port_file, std::to_string(port) + "\n");
    if (!st.ok()) {
      FLEET_LOG(Error) << st.message();
      server->Shutdown();
      return kExitError;
    }
  }

  (*coordinator)->StartRecovered();
  fleet::NotifyReady("serving on " + host + ":" + std::to_string(port));
  {
    // Pings systemd's watchdog while the coordinator's locks can be taken (no deadlock).
    fleet::Watchdog watchdog([&] { return (*coordinator)->Probe(); });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return received_signal != 0; });
  }
  // Draining: probes see NOT_SERVING (and Watch streams are told) before jobs stop and the
  // server refuses new calls.
  set_serving(false);
  fleet::NotifyStopping();
  FLEET_LOG(Info) << "signal " << received_signal << ": shutting down";
  (*coordinator)->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  coordinator->reset();
  FLEET_LOG(Info) << "stopped";
  return kExitOk;
}
