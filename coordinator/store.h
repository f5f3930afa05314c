// Durable coordinator state behind an interface: jobs (spec, state, progress), per-round
// summaries, devices, bootstrap tokens and revocations. SqliteStore is the production implementation; it is thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "proto/fleet.pb.h"

namespace fleet {

class JobStore {
 public:
  virtual ~JobStore() = default;
  // Inserts or replaces the job row (spec, state, progress, error); rounds are stored apart.
  virtual Status SaveJob(const v1::JobStatus& job) = 0;
  virtual Status AppendRound(const std::string& job_id, const v1::RoundSummary& round) = 0;
  // All jobs with their rounds, oldest first.
  virtual StatusOr<std::vector<v1::JobStatus>> LoadJobs() = 0;
  virtual Status SaveDevice(const v1::DeviceStatus& device) = 0;
  virtual StatusOr<std::vector<v1::DeviceStatus>> LoadDevices() = 0;
  // Bootstrap tokens (hashed) and device revocations.
  virtual Status SaveToken(const v1::TokenRecord& token) = 0;
  virtual StatusOr<std::vector<v1::TokenRecord>> LoadTokens() = 0;
  virtual Status SaveRevocation(const v1::DeviceRevocation& revocation) = 0;
  virtual StatusOr<std::vector<v1::DeviceRevocation>> LoadRevocations() = 0;
};

// Opens (creating if needed) the SQLite file at `path`, in WAL mode, at the current schema.
StatusOr<std::unique_ptr<JobStore>> OpenSqliteStore(const std::string& path);

}  // namespace fleet
