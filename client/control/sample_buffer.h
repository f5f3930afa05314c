// The durable, bounded on-device buffer of validated sensor readings, kept for local training
// while the coordinator or the broker is away. SQLite in WAL mode with synchronous=FULL; each row
// carries a BLAKE2b-64 checksum of its contents, and rows that fail it are skipped (and counted)
// when read back.
//
// Append() only queues: a writer thread commits queued readings in one transaction every
// `commit_interval_ms` (group commit), so the control loop never waits for the disk. A reading
// is *acknowledged* once committed (committed() counts them); acknowledged readings survive
// kill -9 and power loss. Retention deletes the oldest rows beyond max_samples and rows older
// than max_age (by time stored, not sample time), after each commit.
//
// Thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "client/control/sensor_schema.h"
#include "common/status.h"

struct sqlite3;

namespace fleet::control {

struct BufferOptions {
  std::string path;
  uint64_t max_samples = 1'000'000;
  int64_t max_age_s = 7 * 24 * 3600;
  uint32_t commit_interval_ms = 50;
  size_t max_queued = 65536;  // readings waiting for the writer; beyond it, drops are counted
};

class SampleBuffer {
 public:
  static StatusOr<std::unique_ptr<SampleBuffer>> Open(BufferOptions options, size_t num_fields);
  ~SampleBuffer();  // commits what is queued

  // Queues one reading (never blocks on disk). False when the queue is full.
  bool Append(const Reading& r);
  // Blocks until everything queued so far is committed; the commit's error, if any.
  Status Flush();

  // Every intact row, oldest first; *corrupt counts rows whose checksum failed.
  StatusOr<std::vector<Reading>> ReadAll(uint64_t* corrupt = nullptr);

  uint64_t committed() const;        // acknowledged since open
  uint64_t stored() const;           // rows in the file now
  uint64_t evicted() const;          // removed by retention since open
  uint64_t queue_drops() const;

 private:
  SampleBuffer(BufferOptions options, size_t num_fields, sqlite3* db);
  void WriterLoop();
  Status Commit(std::vector<Reading>& batch);

  const BufferOptions options_;
  const size_t fields_;
  std::mutex db_mu_;  // one transaction or read at a time on db_
  sqlite3* db_;
  mutable std::mutex mu_;
  std::condition_variable cv_, flushed_;
  std::vector<Reading> queue_;      // guarded by mu_
  uint64_t queued_total_ = 0;       // guarded by mu_
  uint64_t committed_total_ = 0;    // guarded by mu_ (readings handled by the writer)
  uint64_t acknowledged_ = 0;       // guarded by mu_
  uint64_t stored_ = 0;             // guarded by mu_
  uint64_t evicted_ = 0;            // guarded by mu_
  uint64_t queue_drops_ = 0;        // guarded by mu_
  Status last_error_;               // guarded by mu_
  bool stop_ = false;               // guarded by mu_
  std::thread writer_;
};

}  // namespace fleet::control
