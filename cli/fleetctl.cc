// fleetctl: administer a fleetfl coordinator (jobs, devices). Noun-verb commands.
// Exit codes: 0 success, 1 error (RPC failure, job failed or stopped), 2 usage (bad flags, bad
// job file).
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <map>
#include <optional>

#include "common/audit_log.h"
#include "common/config.h"
#include "common/file_util.h"
#include "common/grpc_util.h"
#include "common/job_spec.h"
#include "common/log.h"
#include "common/sqlite_util.h"
#include "proto/fleet.grpc.pb.h"
#include "proto/health.grpc.pb.h"

namespace {

using fleet::v1::JobStatus;

constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

struct Options {
  std::string coordinator;
  std::string ca_cert;
  std::string cert;  // admin client certificate (mTLS)
  std::string key;
  std::string server_name;
  bool insecure = false;
  std::string output = "table";
  int timeout_s = 30;
};

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// Precedence: flag > environment > config file > default.
fleet::Status ResolveOptions(Options* o) {
  std::string config = Env("FLEETCTL_CONFIG");
  if (config.empty() && !Env("HOME").empty()) {
    std::string def = Env("HOME") + "/.config/fleetfl/fleetctl.yaml";
    if (access(def.c_str(), R_OK) == 0) config = def;
  }
  std::string file_coordinator, file_ca, file_name, file_cert, file_key;
  if (!config.empty()) {
    ASSIGN_OR_RETURN(YAML::Node root, fleet::LoadYamlFile(config));
    ASSIGN_OR_RETURN(fleet::ConfigMap m, fleet::ConfigMap::Create(root, config));
    RETURN_IF_ERROR(m.Get("coordinator", &file_coordinator));
    RETURN_IF_ERROR(m.Get("ca_cert", &file_ca));
    RETURN_IF_ERROR(m.Get("server_name", &file_name));
    RETURN_IF_ERROR(m.Get("cert", &file_cert));
    RETURN_IF_ERROR(m.Get("key", &file_key));
    RETURN_IF_ERROR(m.Finish());
  }
  auto pick = [](std::string* v, const std::string& env, const std::string& file,
                 const std::string& def) {
    if (!v->empty()) return;
    *v = !env.empty() ? env : !file.empty() ? file : def;
  };
  pick(&o->coordinator, Env("FLEETCTL_COORDINATOR"), file_coordinator, "127.0.0.1:7443");
  pick(&o->ca_cert, Env("FLEETCTL_CA_CERT"), file_ca, "");
  pick(&o->server_name, Env("FLEETCTL_SERVER_NAME"), file_name, "");
  pick(&o->cert, Env("FLEETCTL_CERT"), file_cert, "");
  pick(&o->key, Env("FLEETCTL_KEY"), file_key, "");
  if (o->cert.empty() != o->key.empty()) {
    return fleet::InvalidArgument("--cert and --key go together");
  }
  if (o->output != "table" && o->output != "json") {
    return fleet::InvalidArgument("-o must be 'table' or 'json'");
  }
  return fleet::OkStatus();
}

std::string Short(const std::string& state_name) {
  std::string s = state_name;
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// "device ward3-bed-12", "ids ward3-*", or "" for a token that enrolls any id.
std::string TokenBinding(const fleet::v1::TokenInfo& t) {
  if (!t.device_id().empty()) return "device " + t.device_id();
  if (!t.id_prefix().empty()) return "ids " + t.id_prefix() + "*";
  return "";
}

std::string TimeString(int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

std::string Json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, opts);
  return out;
}

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

double FinalAccuracy(const JobStatus& j) {
  return j.rounds_size() ? j.rounds(j.rounds_size() - 1).eval_accuracy() : 0.0;
}

void PrintJobTable(const std::vector<JobStatus>& jobs) {
  std::printf("%-18s %-20s %-10s %-9s %-9s %s\n", "ID", "NAME", "STATE", "ROUND", "EVAL_ACC",
              "CREATED");
  for (const auto& j : jobs) {
    std::string round = std::to_string(j.current_round()) + "/" + std::to_string(j.spec().rounds());
    std::printf("%-18s %-20s %-10s %-9s %-9.4f %s\n", j.id().c_str(), j.spec().name().c_str(),
                Short(JobStatus::State_Name(j.state())).c_str(), round.c_str(), FinalAccuracy(j),
                TimeString(j.created_unix_ms()).c_str());
  }
}

void PrintJobDetail(const JobStatus& j) {
  const auto& s = j.spec();
  std::printf("id:            %s\nname:          %s\nstate:         %s\n", j.id().c_str(),
              s.name().c_str(), Short(JobStatus::State_Name(j.state())).c_str());
  if (!j.error().empty()) std::printf("error:         %s\n", j.error().c_str());
  std::string hidden;
  for (auto h : s.model().hidden()) hidden += (hidden.empty() ? "" : ",") + std::to_string(h);
  std::printf("dataset:       %s\nmodel:         %s %s %u-[%s]-%u %s dropout %.2f\n",
              s.dataset().c_str(), s.model().type().c_str(), s.model().task().c_str(),
              s.model().input_dim(), hidden.c_str(), s.model().output_dim(),
              s.model().activation().c_str(), s.model().dropout());
  if (s.model().type() == "cnn1d") {
    std::printf("sequence:      %u channels x %u steps, kernel %u\n", s.model().channels(),
                s.model().input_dim() / std::max(1u, s.model().channels()),
                s.model().kernel_size());
  }
  std::printf("training:      %s lr %g, %u local epochs, batch %u\n", s.train().optimizer().c_str(),
              s.train().learning_rate(), s.train().local_epochs(), s.train().batch_size());
  const auto& st = s.strategy();
  std::string strategy = st.name();
  if (st.has_server_learning_rate()) strategy += ", server lr " + Num(st.server_learning_rate());
  if (st.proximal_mu() > 0) strategy += ", mu " + Num(st.proximal_mu());
  if (st.has_beta1()) strategy += ", beta1 " + Num(st.beta1());
  if (st.has_beta2()) strategy += ", beta2 " + Num(st.beta2());
  if (st.has_tau()) strategy += ", tau " + Num(st.tau());
  if (st.has_trim_fraction()) strategy += ", trim " + Num(st.trim_fraction());
  if (st.has_byzantine()) strategy += ", byzantine " + std::to_string(st.byzantine());
  if (st.has_krum_select()) strategy += ", select " + std::to_string(st.krum_select());
  std::printf("strategy:      %s\nclients:       min %u, target %u\nrounds:        %u/%u\n",
              strategy.c_str(), s.min_clients(), s.target_clients(), j.current_round(),
              s.rounds());
  const auto& sa = s.secure_aggregation();
  if (sa.disabled()) {
    std::printf("secure agg:    OFF (enabled: false) - the coordinator sees every update\n");
  } else {
    std::string k = sa.neighbours() ? std::to_string(sa.neighbours()) : "auto";
    std::string t = sa.threshold() ? std::to_string(sa.threshold()) : "auto";
    std::printf("secure agg:    on (SecAgg+): corrupt %.2f, dropout %.2f, k %s, t %s, clip %g, "
                "%u-bit values, weight cap %u\n",
                sa.corrupt_fraction(), sa.dropout_fraction(), k.c_str(), t.c_str(), sa.clip(),
                sa.value_bits(), sa.max_weight());
  }
  std::printf("created:       %s\nupdated:       %s\n", TimeString(j.created_unix_ms()).c_str(),
              TimeString(j.updated_unix_ms()).c_str());
  if (!j.waiting_for().empty()) std::printf("waiting for:   %s\n", j.waiting_for().c_str());
  if (j.restarts() > 0) {
    std::string from = j.resumed_from_round() == 0
                           ? std::string("the initial model")
                           : "round " + std::to_string(j.resumed_from_round()) + "'s checkpoint";
    std::printf("restarts:      %u (coordinator restarted; last at %s, resumed from %s)\n",
                j.restarts(), TimeString(j.last_restart_unix_ms()).c_str(), from.c_str());
  }
  for (const auto& a : j.aborts()) {
    std::string attempt = a.attempt() > 0 ? " attempt " + std::to_string(a.attempt()) : "";
    std::printf("aborted round:  %u%s at %s%s: %s\n", a.round(), attempt.c_str(),
                TimeString(a.unix_ms()).c_str(), a.after_unmask() ? ", after unmasking" : "",
                a.reason().c_str());
  }
  // Sums the coordinator may know, over the models the job may still train from: their devices
  // take no further part in a sum over the same model.
  uint32_t committed = 0;
  for (const auto& r : j.rounds()) committed = std::max(committed, r.round());
  for (const auto& r : j.revealed()) {
    std::string devices;
    for (int i = 0; i < r.devices_size() && i < 5; ++i) {
      devices += (i > 0 ? ", " : "") + r.devices(i);
    }
    if (r.devices_size() > 5) devices += ", ...";
    std::string outcome = !r.failure().empty()     ? "failed after unmasking: " + r.failure()
                          : r.round() <= committed ? std::string("committed")
                                                   : std::string("in flight");
    std::printf("revealed sum:   round %u attempt %u, model %s, %d devices (%s), at %s: %s\n",
                r.round(), r.attempt(), r.model_blake2b().substr(0, 12).c_str(), r.devices_size(),
                devices.c_str(), TimeString(r.unix_ms()).c_str(), outcome.c_str());
  }
  if (j.rounds_size() == 0) return;
  std::printf("\n%-6s %-9s %-9s %-11s %-8s %-9s %-9s %-8s %s\n", "ROUND", "UPDATES", "REJECTED",
              "TRAIN_LOSS", "VAL_ACC", "EVAL_N", "EVAL_ACC", "SECAGG", "SECONDS");
  for (const auto& r : j.rounds()) {
    std::string upd = std::to_string(r.participants()) + "/" + std::to_string(r.selected());
    std::string sec = r.secure() ? "k" + std::to_string(r.secagg_neighbours()) + ",t" +
                                       std::to_string(r.secagg_threshold())
                                 : "off";
    std::printf("%-6u %-9s %-9u %-11.4f %-8.4f %-9u %-9.4f %-8s %.2f\n", r.round(), upd.c_str(),
                r.rejected(), r.train_loss(), r.val_accuracy(), r.eval_clients(),
                r.eval_accuracy(), sec.c_str(), r.duration_s());
  }
}

class Admin {
 public:
  explicit Admin(const Options& o) : o_(o) {}

  fleet::Status Connect() {
    fleet::ClientTlsOptions tls;
    tls.insecure = o_.insecure;
    tls.ca_file = o_.ca_cert;
    tls.server_name = o_.server_name;
    tls.cert_file = o_.cert;
    tls.key_file = o_.key;
    ASSIGN_OR_RETURN(auto channel, fleet::MakeChannel(o_.coordinator, tls, 64 << 20));
    stub_ = fleet::v1::Admin::NewStub(channel);
    return fleet::OkStatus();
  }

  void Prepare(grpc::ClientContext* ctx, bool stream = false) const {
    if (!stream) {
      ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(o_.timeout_s));
    }
  }

  fleet::v1::Admin::Stub* stub() { return stub_.get(); }

 private:
  const Options& o_;
  std::unique_ptr<fleet::v1::Admin::Stub> stub_;
};

int RpcError(const grpc::Status& s, const Options& o) {
  std::string hint;
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
    hint = " (is fleet-coordinator running at " + o.coordinator +
           "? TLS: pass --ca-cert, or --insecure for a plaintext coordinator)";
  } else if (s.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
             s.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
    hint = " (admin commands need the admin certificate: --cert/--key, e.g. <state-dir>/pki/"
           "admin.pem and admin.key)";
  }
  std::cerr << "fleetctl: " << s.error_message() << hint << "\n";
  return kExitError;
}

// `fleetctl health`: grpc.health.v1 Check, which needs no client certificate (server TLS only),
// so a container health check can run it with just the CA. Exit 0 only for SERVING.
int Health(const Options& o, const std::string& service) {
  fleet::ClientTlsOptions tls;
  tls.insecure = o.insecure;
  tls.ca_file = o.ca_cert;
  tls.server_name = o.server_name;
  tls.cert_file = o.cert;
  tls.key_file = o.key;
  auto channel = fleet::MakeChannel(o.coordinator, tls, 1 << 20);
  if (!channel.ok()) {
    std::cerr << "fleetctl: " << channel.status().message() << "\n";
    return kExitUsage;
  }
  auto stub = grpc::health::v1::Health::NewStub(*channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(o.timeout_s));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = stub->Check(&ctx, req, &resp);
  if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
    std::cerr << "fleetctl: the coordinator has no service '" << service
              << "' (fleet.v1.Device, fleet.v1.Admin, fleet.v1.Enrollment, or none for the whole "
                 "server)\n";
    return kExitError;
  }
  if (!s.ok()) return RpcError(s, o);
  std::printf(
      "%s\n",
      o.output == "json"
          ? Json(resp).c_str()
          : grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()).c_str());
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kExitOk : kExitError;
}

struct AuditVerifyArgs {
  std::string file;
  std::string key_file;  // the log's MAC key (STATE_DIR/pki/audit.key)
  std::string db;        // the coordinator's state database: the head it recorded
  uint64_t expect_seq = 0;
  std::string expect_head;  // hex hash of record expect_seq, kept elsewhere
};

// The head the coordinator recorded after its last append (table audit_head, schema v6 of
// coordinator/sqlite_store.cc). nullopt: none recorded yet.
fleet::StatusOr<std::optional<fleet::AuditHead>> ReadRecordedHead(const std::string& path) {
  if (!fleet::FileExists(path)) return fleet::NotFound("no database at " + path);
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return fleet::Unavailable("cannot open " + path + ": " + msg);
  }
  fleet::StatusOr<std::optional<fleet::AuditHead>> out = std::optional<fleet::AuditHead>();
  {
    fleet::Stmt st(db, "SELECT seq, hash, mac FROM audit_head WHERE id=1;");
    if (!st.ok()) {
      out = fleet::FailedPrecondition(path + " has no audit head table (" + sqlite3_errmsg(db) +
                                      "): not a coordinator database of this version");
    } else {
      int rc = sqlite3_step(st.get());
      if (rc == SQLITE_ROW) {
        fleet::AuditHead h;
        h.seq = static_cast<uint64_t>(st.Int(0));
        h.hash = st.Text(1);
        h.mac = st.Text(2);
        out = std::optional<fleet::AuditHead>(h);
      } else if (rc != SQLITE_DONE) {
        out = fleet::Unavailable("cannot read " + path + ": " + sqlite3_errmsg(db));
      }
    }
  }
  sqlite3_close(db);
  return out;
}

// Exit 0: intact (and, when asked, authenticated and not behind the expected head); 1: broken,
// MAC failure, unauthenticated, truncated or rewritten; 2: usage or I/O error.
int VerifyAudit(const AuditVerifyArgs& a, const Options& o) {
  auto fail = [](const std::string& why) {
    std::cerr << "fleetctl audit verify: " << why << "\n";
    return kExitUsage;
  };
  if (!a.db.empty() && (a.expect_seq != 0 || !a.expect_head.empty())) {
    return fail("give --db or --expect-seq/--expect-head, not both");
  }
  if ((a.expect_seq == 0) != a.expect_head.empty()) {
    return fail("--expect-seq and --expect-head go together (both from an earlier verify)");
  }
  if (!a.expect_head.empty() &&
      (a.expect_head.size() != 64 ||
       a.expect_head.find_first_not_of("0123456789abcdef") != std::string::npos)) {
    return fail("--expect-head must be the 64 hex digits of a record's hash");
  }
  std::optional<fleet::AuditKey> key;
  if (!a.key_file.empty()) {
    auto k = fleet::LoadAuditKey(a.key_file);
    if (!k.ok()) return fail(k.status().message());
    key = std::move(k).value();
  }
  std::optional<fleet::AuditHead> expected;
  std::string expected_from;
  if (!a.db.empty()) {
    auto h = ReadRecordedHead(a.db);
    if (!h.ok()) return fail(h.status().message());
    expected = *h ? **h : fleet::AuditHead{};
    expected_from = "the database's recorded head";
  } else if (a.expect_seq != 0) {
    expected = fleet::AuditHead{a.expect_seq, a.expect_head, ""};
    expected_from = "the expected head";
  }
  auto v = fleet::VerifyAuditLog(a.file, key ? &*key : nullptr, expected ? expected->seq : 0);
  if (!v.ok()) return fail(v.status().message());

  // Intact chain, then authenticity, then position against the recorded head.
  bool good = v->ok;
  std::string verdict, head_check = "none";
  if (!v->ok) {
    verdict = "BROKEN at line " + std::to_string(v->broken_line) + ": " + v->reason + " (" +
              std::to_string(v->records) + " records before it are intact)";
  } else {
    verdict = "intact, " + std::to_string(v->records) + " records, head seq " +
              std::to_string(v->head.seq) + " hash " + (v->head.hash.empty() ? "-" : v->head.hash);
    if (!key) {
      verdict += "; MACs not checked (pass --key STATE_DIR/pki/audit.key)";
    } else if (v->records > 0 && v->keyed == 0) {
      good = false;
      verdict = "NOT AUTHENTICATED: none of its " + std::to_string(v->records) +
                " records carries a MAC (" + verdict + ")";
    } else {
      verdict += "; " + std::to_string(v->macs_checked) + " MACs verified";
      if (v->keyed < v->records) {
        verdict += " (the first " + std::to_string(v->records - v->keyed) +
                   " records predate the key and are pinned by the MACed ones)";
      }
    }
    if (expected) {
      fleet::AuditHeadComparison c = fleet::CompareAuditHead(*v, *expected);
      switch (c.match) {
        case fleet::AuditHeadMatch::kSame:
          head_check = "same";
          verdict += "; matches " + expected_from;
          break;
        case fleet::AuditHeadMatch::kAheadByOne:
        case fleet::AuditHeadMatch::kAhead:
          head_check = "ahead";
          verdict += "; " + std::to_string(c.ahead) + " record(s) after " + expected_from +
                     " (appended since; with the coordinator stopped, more than 1 means the "
                     "database is older than the log)";
          break;
        case fleet::AuditHeadMatch::kTruncated:
          head_check = "truncated";
          good = false;
          verdict = "TRUNCATED: " + c.explanation;
          break;
        case fleet::AuditHeadMatch::kDiverged:
          head_check = "rewritten";
          good = false;
          verdict = "REWRITTEN: " + c.explanation;
          break;
      }
    }
  }
  if (o.output == "json") {
    nlohmann::json j = {{"file", a.file},
                        {"intact", v->ok},
                        {"ok", good},
                        {"records", v->records},
                        {"broken_line", v->broken_line},
                        {"reason", v->reason},
                        {"head_seq", v->head.seq},
                        {"head_hash", v->head.hash},
                        {"macs_checked", key.has_value()},
                        {"macs_verified", v->macs_checked},
                        {"unkeyed_records", v->records - v->keyed},
                        {"head_check", head_check},
                        {"verdict", verdict}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s: %s\n", a.file.c_str(), verdict.c_str());
  }
  return good ? kExitOk : kExitError;
}

// Prints one job status: a JSON line, or the progress line (redrawn in place on a TTY).
void PrintProgress(const JobStatus& j, const Options& o, bool tty) {
  if (o.output == "json") {
    std::string line;
    google::protobuf::util::JsonPrintOptions opts;
    opts.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(j, &line, opts);
    std::printf("%s\n", line.c_str());
  } else {
    std::string round_info;
    if (j.rounds_size() > 0) {
      const auto& r = j.rounds(j.rounds_size() - 1);
      char buf[160];
      std::snprintf(buf, sizeof(buf),
                    " | last round %u: %u/%u clients, train_loss %.4f, eval_acc %.4f", r.round(),
                    r.participants(), r.selected(), r.train_loss(), r.eval_accuracy());
      round_info = buf;
    }
    std::printf("%s%s %s round %u/%u%s%s", tty ? "\r\033[K" : "", j.id().c_str(),
                Short(JobStatus::State_Name(j.state())).c_str(), j.current_round(),
                j.spec().rounds(), round_info.c_str(), tty ? "" : "\n");
  }
  std::fflush(stdout);
}

// Follows a job until it ends. Live single-line progress on a TTY, one line per change otherwise.
// The coordinator bounds every watch stream (watch_timeout_s) and ends it with
// DEADLINE_EXCEEDED; then the next one is opened, so a watch lasts as long as the job.
int Watch(Admin& admin, const Options& o, const std::string& id) {
  const bool tty = isatty(STDOUT_FILENO) && o.output == "table";
  JobStatus j, last;
  bool any = false;
  grpc::Status s;
  bool reopen = true;
  while (reopen) {
    grpc::ClientContext ctx;
    admin.Prepare(&ctx, /*stream=*/true);
    fleet::v1::WatchJobRequest req;
    req.set_id(id);
    auto reader = admin.stub()->WatchJob(&ctx, req);
    bool got = false;
    while (reader->Read(&j)) {
      got = true;
      // A new stream starts with the current status, which may be the last one shown.
      if (any && j.SerializeAsString() == last.SerializeAsString()) continue;
      any = true;
      last = j;
      PrintProgress(j, o, tty);
    }
    s = reader->Finish();
    reopen = s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && got;
  }
  if (tty && any) std::printf("\n");
  if (!s.ok()) return RpcError(s, o);
  if (last.state() != JobStatus::SUCCEEDED) {
    std::cerr << "fleetctl: job " << id << " ended " << Short(JobStatus::State_Name(last.state()))
              << (last.error().empty() ? "" : ": " + last.error()) << "\n";
    return kExitError;
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  if (fleet::Status tls = fleet::RequireTls13(); !tls.ok()) {
    std::cerr << "fleetctl: " << tls.message() << "\n";
    return 1;
  }
  fleet::SetLogComponent("fleetctl");
  fleet::SetLogLevel(fleet::LogLevel::kWarn);
  CLI::App app{"fleetctl: administer a fleetfl coordinator.\n"
               "Coordinator address: --coordinator, else $FLEETCTL_COORDINATOR, else "
               "'coordinator:' in $FLEETCTL_CONFIG or ~/.config/fleetfl/fleetctl.yaml, else "
               "127.0.0.1:7443.\nExit codes: 0 ok, 1 error, 2 usage."};
  app.require_subcommand(1);
  Options o;
  app.add_option("--coordinator", o.coordinator, "coordinator host:port");
  app.add_option("--ca-cert", o.ca_cert, "PEM CA certificate to pin ($FLEETCTL_CA_CERT)");
  app.add_option("--cert", o.cert, "PEM admin client certificate ($FLEETCTL_CERT)");
  app.add_option("--key", o.key, "PEM key of --cert ($FLEETCTL_KEY)");
  app.add_option("--server-name", o.server_name, "expected name in the server certificate");
  app.add_flag("--insecure", o.insecure, "plaintext connection (development only)");
  app.add_option("-o,--output", o.output, "output format: table|json")->capture_default_str();
  app.add_option("--timeout", o.timeout_s, "RPC timeout in seconds")->capture_default_str();

  auto* job = app.add_subcommand("job", "submit, inspect, follow and stop federated jobs");
  job->require_subcommand(1);
  std::string file, id;
  bool watch_after = false;
  auto* submit = job->add_subcommand("submit", "submit a job from a YAML spec");
  submit->add_option("-f,--file", file, "job spec YAML")->required();
  submit->add_flag("-w,--watch", watch_after, "follow the job until it ends");
  auto* list = job->add_subcommand("list", "list jobs");
  auto* get = job->add_subcommand("get", "show one job with its rounds");
  get->add_option("id", id, "job id")->required();
  auto* watch = job->add_subcommand("watch", "follow a job until it ends (exit 0 if it succeeded)");
  watch->add_option("id", id, "job id")->required();
  auto* stop = job->add_subcommand("stop", "stop a running job");
  stop->add_option("id", id, "job id")->required();
  auto* device = app.add_subcommand("device", "inspect devices");
  device->require_subcommand(1);
  auto* dlist = device->add_subcommand("list", "list devices known to the coordinator");
  auto* drevoke = device->add_subcommand(
      "revoke", "revoke a device: its certificates stop working at once (open calls are closed) "
                "and it cannot enroll again under that id");
  drevoke->add_option("id", id, "device id")->required();
  auto* dreset = device->add_subcommand(
      "reset",
      "re-provision a lost or wiped device: its current certificate stops working at once "
      "(open calls are closed) and it may enroll again with a bootstrap token (unlike "
      "revoke, the id stays usable)");
  dreset->add_option("id", id, "device id")->required();

  auto* token = app.add_subcommand("token", "bootstrap tokens with which devices enroll");
  token->require_subcommand(1);
  std::string ttl = "24h", label;
  uint32_t uses = 1;
  auto* tcreate = token->add_subcommand("create", "create a token; prints it once (stored hashed)");
  tcreate->add_option("--ttl", ttl, "lifetime, e.g. 90m, 24h, 7d")->capture_default_str();
  tcreate->add_option("--uses", uses, "how many enrollments it allows")->capture_default_str();
  tcreate->add_option("--label", label, "free text, e.g. site=ward3");
  std::string bind_id, bind_prefix;
  auto* bind_id_opt =
      tcreate->add_option("--device-id", bind_id, "the token enrolls only this device id");
  tcreate
      ->add_option("--id-prefix", bind_prefix,
                   "the token enrolls only device ids that start with this, e.g. ward3-")
      ->excludes(bind_id_opt);
  auto* tlist = token->add_subcommand("list", "list tokens (never their secrets)");
  auto* trevoke = token->add_subcommand("revoke", "revoke a token by id");
  trevoke->add_option("id", id, "token id (the 16 hex digits after fleet1_)")->required();

  auto* audit = app.add_subcommand("audit", "the coordinator's hash-chained audit trail");
  audit->require_subcommand(1);
  AuditVerifyArgs audit_args;
  auto* averify = audit->add_subcommand(
      "verify",
      "check every link of an audit log; with --key every MAC, with --db or "
      "--expect-seq/--expect-head that nothing was cut off or rewritten (exit 0 intact, "
      "1 broken, unauthenticated, truncated or rewritten, 2 usage or I/O error)");
  averify->add_option("file", audit_args.file, "audit log, e.g. <state-dir>/audit.log")->required();
  averify->add_option("--key", audit_args.key_file,
                      "the log's MAC key, <state-dir>/pki/audit.key (not the admin key)");
  averify->add_option("--db", audit_args.db,
                      "the coordinator's database, <state-dir>/coordinator.db: the log must reach "
                      "the head it recorded");
  averify->add_option("--expect-seq", audit_args.expect_seq,
                      "a head kept elsewhere (printed by an earlier verify): the log must still "
                      "hold this record ...");
  averify->add_option("--expect-head", audit_args.expect_head, "... with this hash (64 hex)");

  auto* health = app.add_subcommand(
      "health",
      "ask the coordinator's grpc.health.v1 service whether it serves; needs only "
      "--ca-cert, no client certificate (exit 0 SERVING, 1 NOT_SERVING or unreachable)");
  std::string health_service;
  health->add_option("--service", health_service,
                     "one service (fleet.v1.Device, fleet.v1.Admin, fleet.v1.Enrollment); "
                     "default: the whole server");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  fleet::Status st = ResolveOptions(&o);
  if (!st.ok()) {
    std::cerr << "fleetctl: " << st.message() << "\n";
    return kExitUsage;
  }

  if (averify->parsed()) return VerifyAudit(audit_args, o);
  if (health->parsed()) return Health(o, health_service);
  int64_t ttl_s = 0;
  if (tcreate->parsed()) {
    auto parsed = fleet::ParseDurationSeconds(ttl);
    if (!parsed.ok()) {
      std::cerr << "fleetctl: --ttl: " << parsed.status().message() << "\n";
      return kExitUsage;
    }
    ttl_s = *parsed;
    for (const auto& [flag, value] :
         {std::pair<const char*, const std::string&>{"--device-id", bind_id},
          {"--id-prefix", bind_prefix}}) {
      if (value.empty()) continue;
      fleet::Status valid = fleet::ValidateDeviceId(value);
      if (!valid.ok()) {
        std::cerr << "fleetctl: " << flag << " '" << value << "': " << valid.message() << "\n";
        return kExitUsage;
      }
    }
  }

  // Parse the job file before connecting: a bad spec is a usage error, reported against the file.
  fleet::v1::JobSpec spec;
  if (submit->parsed()) {
    auto parsed = fleet::LoadJobSpecFile(file);
    if (!parsed.ok()) {
      std::cerr << "fleetctl: " << parsed.status().message() << "\n";
      return kExitUsage;
    }
    spec = std::move(parsed).value();
  }

  Admin admin(o);
  st = admin.Connect();
  if (!st.ok()) {
    std::cerr << "fleetctl: " << st.message() << "\n";
    return kExitUsage;
  }
  grpc::ClientContext ctx;
  admin.Prepare(&ctx);

  if (submit->parsed()) {
    fleet::v1::SubmitJobRequest req;
    *req.mutable_spec() = spec;
    JobStatus resp;
    grpc::Status s = admin.stub()->SubmitJob(&ctx, req, &resp);
    if (!s.ok()) return RpcError(s, o);
    if (o.output == "json") std::printf("%s\n", Json(resp).c_str());
    else std::printf("%s\n", resp.id().c_str());
    std::fflush(stdout);
    return watch_after ? Watch(admin, o, resp.id()) : kExitOk;
  }
  if (list->parsed()) {
    fleet::v1::ListJobsResponse resp;
    grpc::Status s = admin.stub()->ListJobs(&ctx, fleet::v1::ListJobsRequest(), &resp);
    if (!s.ok()) return RpcError(s, o);
    if (o.output == "json") std::printf("%s\n", Json(resp).c_str());
    else PrintJobTable({resp.jobs().begin(), resp.jobs().end()});
    return kExitOk;
  }
  if (get->parsed() || stop->parsed()) {
    JobStatus resp;
    grpc::Status s;
    if (get->parsed()) {
      fleet::v1::GetJobRequest req;
      req.set_id(id);
      s = admin.stub()->GetJob(&ctx, req, &resp);
    } else {
      fleet::v1::StopJobRequest req;
      req.set_id(id);
      s = admin.stub()->StopJob(&ctx, req, &resp);
    }
    if (!s.ok()) return RpcError(s, o);
    if (o.output == "json") std::printf("%s\n", Json(resp).c_str());
    else if (get->parsed()) PrintJobDetail(resp);
    else std::printf("%s: stop requested (state %s)\n", resp.id().c_str(),
                     Short(JobStatus::State_Name(resp.state())).c_str());
    return kExitOk;
  }
  if (watch->parsed()) return Watch(admin, o, id);
  if (drevoke->parsed()) {
    fleet::v1::RevokeDeviceRequest req;
    req.set_id(id);
    fleet::v1::RevokeDeviceResponse resp;
    grpc::Status s = admin.stub()->RevokeDevice(&ctx, req, &resp);
    if (!s.ok()) return RpcError(s, o);
    if (o.output == "json") std::printf("%s\n", Json(resp).c_str());
    else std::printf("device %s revoked (%u open calls closed)\n", id.c_str(), resp.closed_calls());
    return kExitOk;
  }
  if (dreset->parsed()) {
    fleet::v1::ResetDeviceRequest req;
    req.set_id(id);
    fleet::v1::ResetDeviceResponse resp;
    grpc::Status s = admin.stub()->ResetDevice(&ctx, req, &resp);
    if (!s.ok()) return RpcError(s, o);
    if (o.output == "json") {
      std::printf("%s\n", Json(resp).c_str());
    } else {
      std::printf(
          "device %s reset: certificate %s no longer accepted (%u open calls closed); it "
          "may enroll again with a bootstrap token\n",
          id.c_str(), resp.forgotten_serial().empty() ? "(none)" : resp.forgotten_serial().c_str(),
          resp.closed_calls());
    }
    return kExitOk;
  }
  if (tcreate->parsed()) {
    fleet::v1::CreateTokenRequest req;
    req.set_ttl_s(static_cast<uint32_t>(std::min<int64_t>(ttl_s, UINT32_MAX)));
    req.set_uses(uses);
    req.set_label(label);
    req.set_device_id(bind_id);
    req.set_id_prefix(bind_prefix);
    fleet::v1::CreateTokenResponse resp;
    grpc::Status s = admin.stub()->CreateToken(&ctx, req, &resp);
    if (!s.ok()) return RpcError(s, o);
    if (o.output == "json") {
      std::printf("%s\n", Json(resp).c_str());
    } else {
      std::printf("%s\n", resp.token().c_str());
      std::fprintf(stderr,
                   "token %s: %u uses, expires %s%s%s (shown once; the coordinator keeps "
                   "only its id and a salt)\n",
                   resp.info().id().c_str(), resp.info().uses_total(),
                   TimeString(resp.info().expires_unix() * 1000).c_str(),
                   TokenBinding(resp.info()).empty()
                       ? ""
                       : (", enrolls only " + TokenBinding(resp.info())).c_str(),
                   label.empty() ? "" : (", label " + label).c_str());
    }
    return kExitOk;
  }
  if (tlist->parsed() || trevoke->parsed()) {
    std::vector<fleet::v1::TokenInfo> tokens;
    grpc::Status s;
    if (tlist->parsed()) {
      fleet::v1::ListTokensResponse resp;
      s = admin.stub()->ListTokens(&ctx, fleet::v1::ListTokensRequest(), &resp);
      tokens.assign(resp.tokens().begin(), resp.tokens().end());
    } else {
      fleet::v1::RevokeTokenRequest req;
      req.set_id(id);
      fleet::v1::TokenInfo resp;
      s = admin.stub()->RevokeToken(&ctx, req, &resp);
      tokens.push_back(resp);
    }
    if (!s.ok()) return RpcError(s, o);
    if (o.output == "json") {
      for (const auto& t : tokens) std::printf("%s\n", Json(t).c_str());
      return kExitOk;
    }
    std::printf("%-18s %-9s %-22s %-22s %-8s %-24s %s\n", "ID", "USES", "CREATED", "EXPIRES",
                "STATE", "ENROLLS", "LABEL");
    const int64_t now = static_cast<int64_t>(std::time(nullptr));
    for (const auto& t : tokens) {
      std::string state = t.revoked()                ? "revoked"
                          : now >= t.expires_unix()  ? "expired"
                          : t.uses_left() == 0       ? "used"
                                                     : "active";
      std::string u = std::to_string(t.uses_left()) + "/" + std::to_string(t.uses_total());
      const std::string binding = TokenBinding(t);
      std::printf("%-18s %-9s %-22s %-22s %-8s %-24s %s\n", t.id().c_str(), u.c_str(),
                  TimeString(t.created_unix() * 1000).c_str(),
                  TimeString(t.expires_unix() * 1000).c_str(), state.c_str(),
                  binding.empty() ? "any id" : binding.c_str(), t.label().c_str());
    }
    return kExitOk;
  }
  if (dlist->parsed()) {
    fleet::v1::ListDevicesResponse resp;
    grpc::Status s = admin.stub()->ListDevices(&ctx, fleet::v1::ListDevicesRequest(), &resp);
    if (!s.ok()) return RpcError(s, o);
    if (o.output == "json") {
      std::printf("%s\n", Json(resp).c_str());
      return kExitOk;
    }
    // STATE: online/offline/revoked; TRAINING: busy with a task; POWER: ac or battery %;
    // LOAD: 1-minute load per core (idle devices are marked *).
    std::printf("%-24s %-8s %-16s %-22s %-14s %-8s %-6s %-8s %-28s %s\n", "ID", "STATE", "JOB",
                "LAST_SEEN", "VERSION", "POWER", "LOAD", "FREE_MB", "DATASETS (train/eval)",
                "LABELS");
    for (const auto& d : resp.devices()) {
      std::string ds, labels;
      for (const auto& x : d.datasets()) {
        ds += (ds.empty() ? "" : ",") + x.name() + " " + std::to_string(x.train_examples()) + "/" +
              std::to_string(x.eval_examples());
      }
      std::map<std::string, std::string> sorted(d.labels().begin(), d.labels().end());
      for (const auto& [k, v] : sorted) labels += (labels.empty() ? "" : ",") + k + "=" + v;
      const char* state = d.revoked() ? "revoked" : d.online() ? "online" : "offline";
      const auto& e = d.eligibility();
      std::string power = e.on_power() ? (e.battery_percent() < 100
                                              ? "ac " + std::to_string(e.battery_percent()) + "%"
                                              : "ac")
                                       : "bat " + std::to_string(e.battery_percent()) + "%";
      char load[16];
      std::snprintf(load, sizeof load, "%.2f%s", e.cpu_load(), e.idle() ? "*" : "");
      std::string holder = d.reserved_by().empty() ? (d.busy() ? "(busy)" : "-") : d.reserved_by();
      std::printf("%-24s %-8s %-16s %-22s %-14s %-8s %-6s %-8llu %-28s %s\n", d.id().c_str(),
                  state, holder.c_str(), TimeString(d.last_seen_unix_ms()).c_str(),
                  d.software_version().c_str(), power.c_str(), load,
                  static_cast<unsigned long long>(e.free_memory_mb()), ds.c_str(),
                  labels.empty() ? "-" : labels.c_str());
    }
    return kExitOk;
  }
  return kExitUsage;
}
