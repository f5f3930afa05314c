#include <sqlite3.h>

#include <mutex>

#include "common/sqlite_util.h"
#include "coordinator/store.h"

namespace fleet {
namespace {

// v1: jobs, rounds, devices. v2: + tokens, revocations (CREATE IF NOT EXISTS migrates v1).
// v3: + checkpoints, jobs.restarts/last_restart_ms/resumed_from (kMigrations).
// v4: + jobs.last_selected (cooldown state: a JobStatus holding only last_selected).
// v5: + jobs.revealed (secure sums whose Unmask stage opened: a JobStatus holding only revealed).
// v6: + audit_head (one row: the audit log's newest record; fleetctl audit verify --db reads it).
// v7: + device_certs (each device id's current certificate). Devices that joined before are
//     marked 'legacy': their certificates were issued unrecorded (see DeviceCertRecord).
// v8: + revealed_sums (every secure sum whose Unmask stage opened, fleet-wide, by model hash).
constexpr int kSchemaVersion = 8;

// The v2 schema; a new file is created at v2 and migrated forward like an old one, so every
// database goes through the same steps.
const char* kSchemaV2 = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  state INTEGER NOT NULL,
  current_round INTEGER NOT NULL,
  error TEXT NOT NULL,
  spec BLOB NOT NULL,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
  job_id TEXT NOT NULL REFERENCES jobs(id),
  round INTEGER NOT NULL,
  summary BLOB NOT NULL,
  PRIMARY KEY (job_id, round)
);
CREATE TABLE IF NOT EXISTS devices (
  id TEXT PRIMARY KEY,
  status BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
  id TEXT PRIMARY KEY,
  record BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS revocations (
  device_id TEXT PRIMARY KEY,
  record BLOB NOT NULL
);
)sql";

struct Migration {
  int to_version;
  const char* sql;
};
const Migration kMigrations[] = {
    {3, R"sql(
ALTER TABLE jobs ADD COLUMN restarts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN last_restart_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN resumed_from INTEGER NOT NULL DEFAULT 0;
CREATE TABLE checkpoints (
  job_id TEXT NOT NULL REFERENCES jobs(id),
  round INTEGER NOT NULL,
  file TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  blake2b TEXT NOT NULL,
  optimizer_file TEXT NOT NULL,
  optimizer_blake2b TEXT NOT NULL,
  PRIMARY KEY (job_id, round)
);
)sql"},
    {4, R"sql(
ALTER TABLE jobs ADD COLUMN last_selected BLOB NOT NULL DEFAULT x'';
)sql"},
    {5, R"sql(
ALTER TABLE jobs ADD COLUMN revealed BLOB NOT NULL DEFAULT x'';
)sql"},
    {6, R"sql(
CREATE TABLE audit_head (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  seq INTEGER NOT NULL,
  hash TEXT NOT NULL,
  mac TEXT NOT NULL
);
)sql"},
    {7, R"sql(
CREATE TABLE device_certs (
  device_id TEXT PRIMARY KEY,
  state TEXT NOT NULL CHECK (state IN ('current', 'reset', 'legacy')),
  serial TEXT NOT NULL,
  not_after INTEGER NOT NULL,
  updated_unix INTEGER NOT NULL
);
INSERT INTO device_certs(device_id, state, serial, not_after, updated_unix)
  SELECT id, 'legacy', '', 0, CAST(strftime('%s', 'now') AS INTEGER) FROM devices
  WHERE id NOT IN (SELECT device_id FROM revocations);
)sql"},
    {8, R"sql(
CREATE TABLE revealed_sums (
  job_id TEXT NOT NULL,
  round INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  model_blake2b TEXT NOT NULL,
  record BLOB NOT NULL,
  PRIMARY KEY (job_id, round, attempt)
);
CREATE INDEX revealed_sums_model ON revealed_sums(model_blake2b);
)sql"},
};

const char* CertStateName(DeviceCertRecord::State s) {
  switch (s) {
    case DeviceCertRecord::State::kCurrent:
      return "current";
    case DeviceCertRecord::State::kReset:
      return "reset";
    case DeviceCertRecord::State::kLegacy:
      return "legacy";
  }
  return "current";
}

class SqliteStore : public JobStore {
 public:
  explicit SqliteStore(sqlite3* db) : db_(db) {}
  ~SqliteStore() override { sqlite3_close(db_); }

  Status Init() {
    RETURN_IF_ERROR(Exec("PRAGMA journal_mode=WAL;"));
    // FULL: a commit (a completed round, a used token) survives a power cut, not just a crash.
    // Writes are rare (per round, per enrollment), so the extra fsync costs nothing measurable.
    RETURN_IF_ERROR(Exec("PRAGMA synchronous=FULL;"));
    RETURN_IF_ERROR(Exec("PRAGMA foreign_keys=ON;"));
    Stmt v(db_, "PRAGMA user_version;");
    int version = 0;
    if (v.ok() && sqlite3_step(v.get()) == SQLITE_ROW) version = static_cast<int>(v.Int(0));
    if (version > kSchemaVersion) {
      return FailedPrecondition("state database has schema version " + std::to_string(version) +
                                ", newer than this coordinator's " +
                                std::to_string(kSchemaVersion) + "; refusing to downgrade");
    }
    if (version < 2) {
      RETURN_IF_ERROR(Exec(kSchemaV2));
      RETURN_IF_ERROR(Exec("PRAGMA user_version=2;"));
      version = 2;
    }
    for (const Migration& m : kMigrations) {
      if (version >= m.to_version) continue;
      RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE;"));
      Status s = Exec(m.sql);
      if (s.ok()) s = Exec("PRAGMA user_version=" + std::to_string(m.to_version) + ";");
      if (s.ok()) s = Exec("COMMIT;");
      if (!s.ok()) {
        (void)Exec("ROLLBACK;");
        return Status(s.code(), "migrating the state database from schema " +
                                    std::to_string(version) + " to " +
                                    std::to_string(m.to_version) + ": " + s.message());
      }
      version = m.to_version;
    }
    return OkStatus();
  }

  Status SaveJob(const v1::JobStatus& job) override {
    std::lock_guard<std::mutex> lock(mu_);
    return SaveJobLocked(job);
  }

  Status CommitRound(const v1::JobStatus& job, const v1::RoundSummary& round,
                     const CheckpointRecord& cp, uint32_t keep_from_round) override {
    std::lock_guard<std::mutex> lock(mu_);
    return InTransaction([&]() -> Status {
      Stmt r(db_, "INSERT OR REPLACE INTO rounds(job_id, round, summary) VALUES(?,?,?);");
      if (!r.ok()) return Error("prepare CommitRound");
      r.Bind(1, job.id());
      r.Bind(2, static_cast<int64_t>(round.round()));
      r.BindBlob(3, round.SerializeAsString());
      if (sqlite3_step(r.get()) != SQLITE_DONE) return Error("CommitRound " + job.id());
      Stmt c(db_,
             "INSERT OR REPLACE INTO checkpoints(job_id,round,file,bytes,blake2b,optimizer_file,"
             "optimizer_blake2b) VALUES(?,?,?,?,?,?,?);");
      if (!c.ok()) return Error("prepare checkpoint");
      c.Bind(1, job.id());
      c.Bind(2, static_cast<int64_t>(cp.round));
      c.Bind(3, cp.file);
      c.Bind(4, static_cast<int64_t>(cp.bytes));
      c.Bind(5, cp.blake2b);
      c.Bind(6, cp.optimizer_file);
      c.Bind(7, cp.optimizer_blake2b);
      if (sqlite3_step(c.get()) != SQLITE_DONE) return Error("checkpoint " + job.id());
      Stmt d(db_, "DELETE FROM checkpoints WHERE job_id=? AND round<?;");
      if (!d.ok()) return Error("prepare prune");
      d.Bind(1, job.id());
      d.Bind(2, static_cast<int64_t>(keep_from_round));
      if (sqlite3_step(d.get()) != SQLITE_DONE) return Error("prune checkpoints " + job.id());
      return SaveJobLocked(job);
    });
  }

  StatusOr<std::vector<CheckpointRecord>> LoadCheckpoints(const std::string& job_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_,
           "SELECT round,file,bytes,blake2b,optimizer_file,optimizer_blake2b FROM checkpoints "
           "WHERE job_id=? ORDER BY round DESC;");
    if (!s.ok()) return Error("prepare LoadCheckpoints");
    s.Bind(1, job_id);
    std::vector<CheckpointRecord> out;
    while (sqlite3_step(s.get()) == SQLITE_ROW) {
      CheckpointRecord r;
      r.round = static_cast<uint32_t>(s.Int(0));
      r.file = s.Text(1);
      r.bytes = static_cast<uint64_t>(s.Int(2));
      r.blake2b = s.Text(3);
      r.optimizer_file = s.Text(4);
      r.optimizer_blake2b = s.Text(5);
      out.push_back(std::move(r));
    }
    return out;
  }

  Status DropRoundsAfter(const std::string& job_id, uint32_t round) override {
    std::lock_guard<std::mutex> lock(mu_);
    return InTransaction([&]() -> Status {
      for (const char* sql : {"DELETE FROM rounds WHERE job_id=? AND round>?;",
                              "DELETE FROM checkpoints WHERE job_id=? AND round>?;"}) {
        Stmt s(db_, sql);
        if (!s.ok()) return Error(std::string("prepare ") + sql);
        s.Bind(1, job_id);
        s.Bind(2, static_cast<int64_t>(round));
        if (sqlite3_step(s.get()) != SQLITE_DONE) return Error("drop rounds of " + job_id);
      }
      return OkStatus();
    });
  }

  StatusOr<std::vector<v1::JobStatus>> LoadJobs() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<v1::JobStatus> jobs;
    Stmt s(
        db_,
        "SELECT id,state,current_round,error,spec,created_ms,updated_ms,restarts,"
        "last_restart_ms,resumed_from,last_selected,revealed FROM jobs ORDER BY created_ms, id;");
    if (!s.ok()) return Error("prepare LoadJobs");
    while (sqlite3_step(s.get()) == SQLITE_ROW) {
      v1::JobStatus job;
      job.set_id(s.Text(0));
      job.set_state(static_cast<v1::JobStatus::State>(s.Int(1)));
      job.set_current_round(static_cast<uint32_t>(s.Int(2)));
      job.set_error(s.Text(3));
      if (!job.mutable_spec()->ParseFromString(s.Text(4))) {
        return Internal("state database: job " + job.id() + " has an unreadable spec");
      }
      job.set_created_unix_ms(s.Int(5));
      job.set_updated_unix_ms(s.Int(6));
      job.set_restarts(static_cast<uint32_t>(s.Int(7)));
      job.set_last_restart_unix_ms(s.Int(8));
      job.set_resumed_from_round(static_cast<uint32_t>(s.Int(9)));
      v1::JobStatus selected;
      if (!selected.ParseFromString(s.Text(10))) {
        return Internal("state database: job " + job.id() + " has unreadable cooldown state");
      }
      *job.mutable_last_selected() = selected.last_selected();
      v1::JobStatus revealed;
      if (!revealed.ParseFromString(s.Text(11))) {
        return Internal("state database: job " + job.id() +
                        " has unreadable revealed-sum records (jobs.revealed)");
      }
      *job.mutable_revealed() = revealed.revealed();
      jobs.push_back(std::move(job));
    }
    for (auto& job : jobs) {
      Stmt r(db_, "SELECT summary FROM rounds WHERE job_id=? ORDER BY round;");
      if (!r.ok()) return Error("prepare LoadRounds");
      r.Bind(1, job.id());
      while (sqlite3_step(r.get()) == SQLITE_ROW) {
        if (!job.add_rounds()->ParseFromString(r.Text(0))) {
          return Internal("state database: job " + job.id() + " has an unreadable round");
        }
      }
    }
    return jobs;
  }

  Status SaveDevice(const v1::DeviceStatus& device) override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, "INSERT OR REPLACE INTO devices(id, status) VALUES(?,?);");
    if (!s.ok()) return Error("prepare SaveDevice");
    s.Bind(1, device.id());
    s.BindBlob(2, device.SerializeAsString());
    if (sqlite3_step(s.get()) != SQLITE_DONE) return Error("SaveDevice " + device.id());
    return OkStatus();
  }

  StatusOr<std::vector<v1::DeviceStatus>> LoadDevices() override {
    return LoadAll<v1::DeviceStatus>("SELECT status FROM devices ORDER BY id;", "device");
  }

  Status SaveToken(const v1::TokenRecord& token) override {
    return Put("INSERT OR REPLACE INTO tokens(id, record) VALUES(?,?);", token.info().id(), token);
  }
  StatusOr<std::vector<v1::TokenRecord>> LoadTokens() override {
    return LoadAll<v1::TokenRecord>("SELECT record FROM tokens ORDER BY id;", "token");
  }
  Status SaveRevocation(const v1::DeviceRevocation& r) override {
    return Put("INSERT OR REPLACE INTO revocations(device_id, record) VALUES(?,?);", r.device_id(),
               r);
  }
  StatusOr<std::vector<v1::DeviceRevocation>> LoadRevocations() override {
    return LoadAll<v1::DeviceRevocation>("SELECT record FROM revocations ORDER BY device_id;",
                                         "revocation");
  }

  Status SaveDeviceCert(const DeviceCertRecord& r) override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_,
           "INSERT OR REPLACE INTO device_certs(device_id, state, serial, not_after, "
           "updated_unix) VALUES(?,?,?,?,?);");
    if (!s.ok()) return Error("prepare SaveDeviceCert");
    s.Bind(1, r.device_id);
    s.Bind(2, std::string(CertStateName(r.state)));
    s.Bind(3, r.serial);
    s.Bind(4, r.not_after);
    s.Bind(5, r.updated_unix);
    if (sqlite3_step(s.get()) != SQLITE_DONE) return Error("SaveDeviceCert " + r.device_id);
    return OkStatus();
  }
  Status DeleteDeviceCert(const std::string& device_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, "DELETE FROM device_certs WHERE device_id=?;");
    if (!s.ok()) return Error("prepare DeleteDeviceCert");
    s.Bind(1, device_id);
    if (sqlite3_step(s.get()) != SQLITE_DONE) return Error("DeleteDeviceCert " + device_id);
    return OkStatus();
  }
  StatusOr<std::vector<DeviceCertRecord>> LoadDeviceCerts() override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_,
           "SELECT device_id, state, serial, not_after, updated_unix FROM device_certs "
           "ORDER BY device_id;");
    if (!s.ok()) return Error("prepare LoadDeviceCerts");
    std::vector<DeviceCertRecord> out;
    while (sqlite3_step(s.get()) == SQLITE_ROW) {
      DeviceCertRecord r;
      r.device_id = s.Text(0);
      const std::string state = s.Text(1);
      r.state = state == "reset"    ? DeviceCertRecord::State::kReset
                : state == "legacy" ? DeviceCertRecord::State::kLegacy
                                    : DeviceCertRecord::State::kCurrent;
      r.serial = s.Text(2);
      r.not_after = s.Int(3);
      r.updated_unix = s.Int(4);
      out.push_back(std::move(r));
    }
    return out;
  }

  Status SaveAuditHead(const AuditHead& head) override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, "INSERT OR REPLACE INTO audit_head(id, seq, hash, mac) VALUES(1,?,?,?);");
    if (!s.ok()) return Error("prepare SaveAuditHead");
    s.Bind(1, static_cast<int64_t>(head.seq));
    s.Bind(2, head.hash);
    s.Bind(3, head.mac);
    if (sqlite3_step(s.get()) != SQLITE_DONE) return Error("SaveAuditHead");
    return OkStatus();
  }
  Status SaveRevealedSum(const v1::RevealedSum& sum) override {
    if (sum.job_id().empty() || sum.model_blake2b().empty()) {
      return InvalidArgument("a revealed sum needs its job id and model hash");
    }
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_,
           "INSERT OR REPLACE INTO revealed_sums(job_id, round, attempt, model_blake2b, record) "
           "VALUES(?,?,?,?,?);");
    if (!s.ok()) return Error("prepare SaveRevealedSum");
    s.Bind(1, sum.job_id());
    s.Bind(2, static_cast<int64_t>(sum.round()));
    s.Bind(3, static_cast<int64_t>(sum.attempt()));
    s.Bind(4, sum.model_blake2b());
    s.BindBlob(5, sum.SerializeAsString());
    if (sqlite3_step(s.get()) != SQLITE_DONE) return Error("SaveRevealedSum " + sum.job_id());
    return OkStatus();
  }
  StatusOr<std::vector<v1::RevealedSum>> LoadRevealedSums(
      const std::string& model_blake2b) override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, "SELECT record FROM revealed_sums WHERE model_blake2b=? ORDER BY rowid;");
    if (!s.ok()) return Error("prepare LoadRevealedSums");
    s.Bind(1, model_blake2b);
    std::vector<v1::RevealedSum> out;
    while (sqlite3_step(s.get()) == SQLITE_ROW) {
      v1::RevealedSum sum;
      if (!sum.ParseFromString(s.Text(0))) {
        return DataLoss("state database: unreadable revealed-sum record for model " +
                        model_blake2b.substr(0, 12));
      }
      out.push_back(std::move(sum));
    }
    return out;
  }
  StatusOr<std::optional<AuditHead>> LoadAuditHead() override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, "SELECT seq, hash, mac FROM audit_head WHERE id=1;");
    if (!s.ok()) return Error("prepare LoadAuditHead");
    int rc = sqlite3_step(s.get());
    if (rc == SQLITE_DONE) return std::optional<AuditHead>();
    if (rc != SQLITE_ROW) return Error("LoadAuditHead");
    AuditHead head;
    head.seq = static_cast<uint64_t>(s.Int(0));
    head.hash = s.Text(1);
    head.mac = s.Text(2);
    return std::optional<AuditHead>(std::move(head));
  }

 private:
  Status SaveJobLocked(const v1::JobStatus& job) {
    Stmt s(db_,
           "INSERT INTO jobs(id,name,state,current_round,error,spec,created_ms,updated_ms,"
           "restarts,last_restart_ms,resumed_from,last_selected,revealed) "
           "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?) "
           "ON CONFLICT(id) DO UPDATE SET state=excluded.state, "
           "current_round=excluded.current_round, error=excluded.error, "
           "updated_ms=excluded.updated_ms, restarts=excluded.restarts, "
           "last_restart_ms=excluded.last_restart_ms, resumed_from=excluded.resumed_from, "
           "last_selected=excluded.last_selected, revealed=excluded.revealed;");
    if (!s.ok()) return Error("prepare SaveJob");
    s.Bind(1, job.id());
    s.Bind(2, job.spec().name());
    s.Bind(3, static_cast<int64_t>(job.state()));
    s.Bind(4, static_cast<int64_t>(job.current_round()));
    s.Bind(5, job.error());
    s.BindBlob(6, job.spec().SerializeAsString());
    s.Bind(7, job.created_unix_ms());
    s.Bind(8, job.updated_unix_ms());
    s.Bind(9, static_cast<int64_t>(job.restarts()));
    s.Bind(10, job.last_restart_unix_ms());
    s.Bind(11, static_cast<int64_t>(job.resumed_from_round()));
    v1::JobStatus selected;
    *selected.mutable_last_selected() = job.last_selected();
    s.BindBlob(12, selected.SerializeAsString());
    v1::JobStatus revealed;
    *revealed.mutable_revealed() = job.revealed();
    s.BindBlob(13, revealed.SerializeAsString());
    if (sqlite3_step(s.get()) != SQLITE_DONE) return Error("SaveJob " + job.id());
    return OkStatus();
  }
  // Runs `body` inside BEGIN IMMEDIATE ... COMMIT; any error rolls everything back.
  template <typename F>
  Status InTransaction(F body) {
    RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE;"));
    Status s = body();
    if (s.ok()) s = Exec("COMMIT;");
    if (!s.ok()) (void)Exec("ROLLBACK;");
    return s;
  }
  Status Put(const char* sql, const std::string& key, const google::protobuf::Message& m) {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, sql);
    if (!s.ok()) return Error(std::string("prepare ") + sql);
    s.Bind(1, key);
    s.BindBlob(2, m.SerializeAsString());
    if (sqlite3_step(s.get()) != SQLITE_DONE) return Error("write " + key);
    return OkStatus();
  }
  template <typename M>
  StatusOr<std::vector<M>> LoadAll(const char* sql, const char* what) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<M> out;
    Stmt s(db_, sql);
    if (!s.ok()) return Error(std::string("prepare ") + sql);
    while (sqlite3_step(s.get()) == SQLITE_ROW) {
      M m;
      if (!m.ParseFromString(s.Text(0))) {
        return Internal(std::string("state database: unreadable ") + what);
      }
      out.push_back(std::move(m));
    }
    return out;
  }
  Status Exec(const std::string& sql) { return SqliteExec(db_, sql); }
  Status Error(const std::string& what) {
    return Internal("sqlite " + what + ": " + sqlite3_errmsg(db_));
  }

  std::mutex mu_;
  sqlite3* db_;
};

}  // namespace

StatusOr<std::unique_ptr<JobStore>> OpenSqliteStore(const std::string& path) {
  StatusOr<sqlite3*> db = SqliteOpen(path);
  if (!db.ok()) return Unavailable("state database: " + db.status().message());
  auto store = std::make_unique<SqliteStore>(*db);
  Status s = store->Init();
  if (!s.ok()) return Status(s.code(), path + ": " + s.message());
  return std::unique_ptr<JobStore>(std::move(store));
}

}  // namespace fleet
