#include "client/control/sample_buffer.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cerrno>
#include <cstring>

#include "common/clock.h"
#include "common/log.h"
#include "common/sqlite_util.h"

namespace fleet::control {

namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS samples (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  ts_ms INTEGER NOT NULL,
  stored_ms INTEGER NOT NULL,
  nfields INTEGER NOT NULL,
  vals BLOB NOT NULL,
  label REAL,
  sum INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_stored ON samples(stored_ms);
)sql";

int64_t Checksum(int64_t ts, const void* vals, size_t n, double label) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, 8);
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(&ts), sizeof ts);
  crypto_generichash_update(&st, static_cast<const unsigned char*>(vals), n);
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(&label), sizeof label);
  int64_t out;
  crypto_generichash_final(&st, reinterpret_cast<unsigned char*>(&out), sizeof out);
  return out;
}

}  // namespace

StatusOr<std::unique_ptr<SampleBuffer>> SampleBuffer::Open(BufferOptions options,
                                                           size_t num_fields) {
  if (sodium_init() < 0) return Internal("libsodium failed to initialize");
  // Raw sensor readings are private: SqliteOpen makes the file and its WAL and shared-memory
  // files owner-only.
  StatusOr<sqlite3*> opened = SqliteOpen(options.path);
  if (!opened.ok()) {
    return Status(opened.status().code(), "sample buffer " + opened.status().message());
  }
  sqlite3* db = *opened;
  Status s = SqliteExec(db, "PRAGMA journal_mode=WAL;");
  if (s.ok()) s = SqliteExec(db, "PRAGMA synchronous=FULL;");
  if (s.ok()) s = SqliteExec(db, kSchema);
  if (!s.ok()) {
    sqlite3_close(db);
    return Status(s.code(), "sample buffer " + options.path + ": " + s.message());
  }
  return std::unique_ptr<SampleBuffer>(new SampleBuffer(std::move(options), num_fields, db));
}

SampleBuffer::SampleBuffer(BufferOptions options, size_t num_fields, sqlite3* db)
    : options_(std::move(options)), fields_(num_fields), db_(db) {
  Stmt count(db_, "SELECT COUNT(*) FROM samples;");
  if (count.ok() && sqlite3_step(count.get()) == SQLITE_ROW) stored_ = count.Int(0);
  writer_ = std::thread([this] { WriterLoop(); });
}

SampleBuffer::~SampleBuffer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  writer_.join();
  sqlite3_close(db_);
}

bool SampleBuffer::Append(const Reading& r) {
  std::lock_guard<std::mutex> lock(mu_);
  if (queue_.size() >= options_.max_queued) {
    ++queue_drops_;
    return false;
  }
  queue_.push_back(r);
  ++queued_total_;
  return true;
}

Status SampleBuffer::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t target = queued_total_;
  cv_.notify_all();
  flushed_.wait(lock, [&] { return committed_total_ >= target || stop_; });
  return last_error_;
}

void SampleBuffer::WriterLoop() {
  std::vector<Reading> batch;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait_for(lock, std::chrono::milliseconds(options_.commit_interval_ms),
                 [&] { return stop_; });
    if (queue_.empty()) {
      if (stop_) break;
      continue;
    }
    batch.swap(queue_);
    lock.unlock();
    Status s = Commit(batch);
    lock.lock();
    committed_total_ += batch.size();
    if (s.ok()) {
      acknowledged_ += batch.size();
    } else if (last_error_.ok() || s.message() != last_error_.message()) {
      FLEET_LOG(Error) << "sample buffer: " << batch.size() << " readings not stored: "
                       << s.message();
    }
    last_error_ = s;
    batch.clear();
    flushed_.notify_all();
  }
}

Status SampleBuffer::Commit(std::vector<Reading>& batch) {
  std::lock_guard<std::mutex> db_lock(db_mu_);
  const int64_t now_ms = UnixMillis();
  RETURN_IF_ERROR(SqliteExec(db_, "BEGIN IMMEDIATE;"));
  Status s;
  {
    Stmt ins(db_, "INSERT INTO samples(ts_ms, stored_ms, nfields, vals, label, sum) VALUES(?,?,?,?,?,?);");
    if (!ins.ok()) s = Internal(std::string("sqlite prepare: ") + sqlite3_errmsg(db_));
    for (const Reading& r : batch) {
      if (!s.ok()) break;
      const size_t bytes = r.values.size() * sizeof(float);
      double label = r.label;
      ins.Bind(1, static_cast<int64_t>(r.ts_ms));
      ins.Bind(2, now_ms);
      ins.Bind(3, static_cast<int64_t>(r.values.size()));
      ins.BindBlob(4, r.values.data(), bytes);
      if (std::isnan(label)) sqlite3_bind_null(ins.get(), 5);
      else ins.Bind(5, label);
      ins.Bind(6, Checksum(r.ts_ms, r.values.data(), bytes, label));
      if (sqlite3_step(ins.get()) != SQLITE_DONE) {
        s = Internal(std::string("sqlite insert: ") + sqlite3_errmsg(db_));
      }
      sqlite3_reset(ins.get());
    }
  }
  uint64_t evicted = 0;
  if (s.ok()) {
    const int64_t oldest = now_ms - options_.max_age_s * 1000;
    Stmt age(db_, "DELETE FROM samples WHERE stored_ms < ?;");
    age.Bind(1, oldest);
    if (sqlite3_step(age.get()) != SQLITE_DONE) s = Internal(sqlite3_errmsg(db_));
    evicted += static_cast<uint64_t>(sqlite3_changes(db_));
  }
  uint64_t stored = 0;
  if (s.ok()) {
    Stmt cnt(db_, "SELECT COUNT(*) FROM samples;");
    if (sqlite3_step(cnt.get()) == SQLITE_ROW) stored = static_cast<uint64_t>(cnt.Int(0));
    if (stored > options_.max_samples) {
      Stmt trim(db_,
                "DELETE FROM samples WHERE seq IN (SELECT seq FROM samples ORDER BY seq LIMIT ?);");
      trim.Bind(1, static_cast<int64_t>(stored - options_.max_samples));
      if (sqlite3_step(trim.get()) != SQLITE_DONE) s = Internal(sqlite3_errmsg(db_));
      evicted += static_cast<uint64_t>(sqlite3_changes(db_));
      stored = options_.max_samples;
    }
  }
  if (s.ok()) s = SqliteExec(db_, "COMMIT;");
  if (!s.ok()) {
    (void)SqliteExec(db_, "ROLLBACK;");
    return s;
  }
  std::lock_guard<std::mutex> lock(mu_);
  stored_ = stored;
  evicted_ += evicted;
  return OkStatus();
}

StatusOr<std::vector<Reading>> SampleBuffer::ReadAll(uint64_t* corrupt) {
  RETURN_IF_ERROR(Flush());
  std::lock_guard<std::mutex> db_lock(db_mu_);
  std::vector<Reading> out;
  uint64_t bad = 0;
  Stmt sel(db_, "SELECT ts_ms, nfields, vals, label, sum FROM samples ORDER BY seq;");
  if (!sel.ok()) return Internal(std::string("sqlite: ") + sqlite3_errmsg(db_));
  int rc;
  while ((rc = sqlite3_step(sel.get())) == SQLITE_ROW) {
    Reading r;
    r.ts_ms = sel.Int(0);
    std::string vals = sel.Text(2);
    double label = sqlite3_column_type(sel.get(), 3) == SQLITE_NULL ? std::nan("") : sel.Double(3);
    if (static_cast<size_t>(sel.Int(1)) != fields_ || vals.size() != fields_ * sizeof(float) ||
        Checksum(r.ts_ms, vals.data(), vals.size(), label) != sel.Int(4)) {
      ++bad;
      continue;
    }
    r.values.resize(fields_);
    std::memcpy(r.values.data(), vals.data(), vals.size());
    r.label = static_cast<float>(label);
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) return Internal(std::string("sqlite read: ") + sqlite3_errmsg(db_));
  if (corrupt != nullptr) *corrupt = bad;
  return out;
}

uint64_t SampleBuffer::committed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return acknowledged_;
}
uint64_t SampleBuffer::stored() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stored_;
}
uint64_t SampleBuffer::evicted() const {
  std::lock_guard<std::mutex> lock(mu_);
  return evicted_;
}
uint64_t SampleBuffer::queue_drops() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_drops_;
}

}  // namespace fleet::control
