// `fleet-coordinator ca serve` (declared in ca_service.h; part of the executable, which links
// the systemd notification code).
#include <google/protobuf/util/json_util.h>

#include <condition_variable>
#include <ctime>
#include <iostream>
#include <mutex>

#include "common/clock.h"
#include "common/config.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/service.h"
#include "common/signals.h"
#include "coordinator/audit_trail.h"
#include "coordinator/ca_service.h"
#include "crypto/random.h"

namespace fleet {

int RunCaServer(const CaServeOptions& o) {
  if (!crypto::Init()) {
    FLEET_LOG(Error) << "libsodium failed to initialize";
    return 1;
  }
  const PkiPaths pki(o.state_dir);
  if (!FileExists(pki.ca_key)) {
    std::cerr << "fleet-coordinator ca serve: no CA key in " << pki.dir
              << ": run `fleet-coordinator ca init --state-dir " << o.state_dir
              << " --coordinator-state-dir DIR` once\n";
    return 2;
  }
  RemoveStaleTempFiles(o.state_dir);
  RemoveStaleTempFiles(pki.dir);
  auto fail = [](const Status& s) {
    FLEET_LOG(Error) << s.message();
    return 1;
  };
  StatusOr<std::unique_ptr<JobStore>> store = OpenSqliteStore(o.state_dir + "/ca.db");
  if (!store.ok()) return fail(store.status());
  StatusOr<std::unique_ptr<AuditLog>> audit = OpenAuditTrail(o.state_dir, store->get());
  if (!audit.ok()) return fail(audit.status());
  StatusOr<std::unique_ptr<Authority>> authority =
      Authority::Load(o.state_dir, /*ca_key=*/true, /*model_key=*/false);
  if (!authority.ok()) return fail(authority.status());
  DeviceCertificates certs(store->get());
  if (Status s = certs.Load(); !s.ok()) return fail(s);
  auto now = [] { return UnixMillis() / 1000; };
  AccessControl access(store->get(), audit->get(), &certs, /*insecure=*/false, now);
  RefusalLog refusals(audit->get(), o.refusal_interval);
  RegistrarOptions ro;
  ro.device_cert_lifetime_s = o.device_cert_lifetime_s;
  ro.now = now;
  StatusOr<std::unique_ptr<LocalRegistrar>> registrar = LocalRegistrar::Create(
      authority->get(), store->get(), audit->get(), &certs, &refusals, pki.token_key, ro);
  if (!registrar.ok()) return fail(registrar.status());

  ServerTlsOptions tls;
  tls.cert_file = pki.server_cert;
  tls.key_file = pki.server_key;
  tls.client_ca_file = pki.ca_cert;
  tls.require_client_certificate = true;
  StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds = MakeServerCredentials(tls);
  if (!creds.ok()) return fail(creds.status());

  std::mutex mu;
  std::condition_variable cv;
  int received_signal = 0;
  HandleTerminationSignals([&](int signo) {
    std::lock_guard<std::mutex> lock(mu);
    received_signal = signo;
    cv.notify_all();
  });
  CaService service(registrar->get(), &access);
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(o.listen, *creds, &port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(64 << 10);  // requests are a CSR and a certificate
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    FLEET_LOG(Error) << "cannot listen on " << o.listen << " (address in use or invalid?)";
    return 1;
  }
  const std::string host = o.listen.substr(0, o.listen.rfind(':'));
  FLEET_LOG(Info) << "CA listening on " << host << ":" << port
                  << " (TLS 1.3, client certificates required), state in " << o.state_dir;
  if (!o.port_file.empty()) {
    if (Status s = WriteFileAtomically(o.port_file, std::to_string(port) + "\n"); !s.ok()) {
      server->Shutdown();
      return fail(s);
    }
  }
  NotifyReady("CA serving on " + host + ":" + std::to_string(port));
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return received_signal != 0; });
  }
  NotifyStopping();
  FLEET_LOG(Info) << "signal " << received_signal << ": shutting down";
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  FLEET_LOG(Info) << "stopped";
  return 0;
}

namespace {

std::string TimeString(int64_t unix_s) {
  std::time_t t = static_cast<std::time_t>(unix_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

std::string Json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, opts);
  return out;
}

}  // namespace

int RunCaAdmin(const CaAdminCommand& c) {
  const PkiPaths pki(c.state_dir);
  if (c.op == CaAdminCommand::Op::kCreateToken) {
    for (const std::string* v : {&c.spec.device_id, &c.spec.id_prefix}) {
      if (v->empty()) continue;
      if (Status valid = ValidateDeviceId(*v); !valid.ok()) {
        std::cerr << "fleet-coordinator ca token create: '" << *v << "': " << valid.message()
                  << "\n";
        return 2;
      }
    }
  }
  ClientTlsOptions tls;
  tls.ca_file = pki.ca_cert;
  tls.cert_file = pki.admin_cert;
  tls.key_file = pki.admin_key;
  tls.server_name = c.server_name;
  StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(c.endpoint, tls, 4 << 20);
  if (!channel.ok()) {
    std::cerr << "fleet-coordinator ca: " << channel.status().message() << "\n";
    return 2;
  }
  auto stub = v1::CertificateAuthority::NewStub(*channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Status s;
  auto failed = [&] {
    std::cerr << "fleet-coordinator ca: " << s.error_message()
              << (s.error_code() == grpc::StatusCode::UNAVAILABLE
                      ? " (is `fleet-coordinator ca serve` running at " + c.endpoint + "?)"
                      : "")
              << "\n";
    return 1;
  };
  switch (c.op) {
    case CaAdminCommand::Op::kCreateToken: {
      v1::CreateTokenRequest req;
      req.set_ttl_s(static_cast<uint32_t>(std::min<int64_t>(c.spec.ttl_s, UINT32_MAX)));
      req.set_uses(c.spec.uses);
      req.set_label(c.spec.label);
      req.set_device_id(c.spec.device_id);
      req.set_id_prefix(c.spec.id_prefix);
      v1::CreateTokenResponse resp;
      s = stub->CreateToken(&ctx, req, &resp);
      if (!s.ok()) return failed();
      if (c.json) {
        std::cout << Json(resp) << "\n";
      } else {
        std::cout << resp.token() << "\n";
        std::cerr << "token " << resp.info().id() << ": " << resp.info().uses_total()
                  << " uses, expires " << TimeString(resp.info().expires_unix())
                  << " (shown once; the CA keeps only its id and a salt)\n";
      }
      return 0;
    }
    case CaAdminCommand::Op::kListTokens:
    case CaAdminCommand::Op::kRevokeToken: {
      std::vector<v1::TokenInfo> tokens;
      if (c.op == CaAdminCommand::Op::kListTokens) {
        v1::ListTokensResponse resp;
        s = stub->ListTokens(&ctx, v1::ListTokensRequest(), &resp);
        tokens.assign(resp.tokens().begin(), resp.tokens().end());
      } else {
        v1::RevokeTokenRequest req;
        req.set_id(c.id);
        v1::TokenInfo resp;
        s = stub->RevokeToken(&ctx, req, &resp);
        tokens.push_back(resp);
      }
      if (!s.ok()) return failed();
      for (const auto& t : tokens) {
        if (c.json) {
          std::cout << Json(t) << "\n";
          continue;
        }
        const std::string binding = !t.device_id().empty()   ? "device " + t.device_id()
                                    : !t.id_prefix().empty() ? "ids " + t.id_prefix() + "*"
                                                             : "any id";
        std::cout << t.id() << "  " << t.uses_left() << "/" << t.uses_total() << "  expires "
                  << TimeString(t.expires_unix()) << "  " << (t.revoked() ? "revoked" : "-") << "  "
                  << binding << "  " << t.label() << "\n";
      }
      return 0;
    }
    case CaAdminCommand::Op::kResetDevice: {
      v1::CaResetRequest req;
      req.set_protocol_version(kProtocolVersion);
      req.set_device_id(c.id);
      v1::ResetDeviceResponse resp;
      s = stub->ResetDevice(&ctx, req, &resp);
      if (!s.ok()) return failed();
      std::cout << "device " << c.id << " reset at the CA: certificate "
                << (resp.forgotten_serial().empty() ? "(none)" : resp.forgotten_serial())
                << " forgotten; it may enroll again\n";
      return 0;
    }
  }
  return 2;
}

}  // namespace fleet
