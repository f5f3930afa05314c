// Durable coordinator state behind an interface: jobs (spec, state, progress, restarts),
// per-round summaries with the checkpoint each produced, devices, bootstrap tokens,
// revocations, each device's current certificate and the audit log's head. SqliteStore is the
// production implementation (WAL, synchronous=FULL, schema versioned with migrations); it is
// thread-safe.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/audit_log.h"
#include "common/status.h"
#include "proto/fleet.pb.h"

namespace fleet {

// A model checkpoint on disk, recorded in the same transaction as the round that produced it.
// Files live in the job's checkpoint directory; checksums are hex BLAKE2b-256 of the contents.
struct CheckpointRecord {
  uint32_t round = 0;
  std::string file;               // global model (FlatBuffers TensorList)
  uint64_t bytes = 0;
  std::string blake2b;
  std::string optimizer_file;     // server optimizer moments; empty when it has none
  std::string optimizer_blake2b;
};

// The certificate a device id may use now (DeviceCertificates). kCurrent: only `serial`, valid
// until `not_after`. kReset: none (an admin ran `fleetctl device reset`); the id may enroll
// again. kLegacy: the device joined before certificates were recorded (schema v7); the first
// certificate it presents becomes current.
struct DeviceCertRecord {
  enum class State { kCurrent, kReset, kLegacy };
  std::string device_id;
  State state = State::kCurrent;
  std::string serial;  // lowercase hex; "" unless kCurrent
  int64_t not_after = 0;
  int64_t updated_unix = 0;
};

class JobStore {
 public:
  virtual ~JobStore() = default;
  // Inserts or replaces the job row (spec, state, progress, error); rounds are stored apart.
  virtual Status SaveJob(const v1::JobStatus& job) = 0;
  // A completed round, atomically: its summary, its checkpoint record and the job row (progress).
  // Checkpoint records older than `keep_from_round` are deleted in the same transaction.
  virtual Status CommitRound(const v1::JobStatus& job, const v1::RoundSummary& round,
                             const CheckpointRecord& checkpoint, uint32_t keep_from_round) = 0;
  // The job's checkpoint records, newest first.
  virtual StatusOr<std::vector<CheckpointRecord>> LoadCheckpoints(const std::string& job_id) = 0;
  // Forgets rounds after `round` (summaries and checkpoint records), atomically: used when their
  // checkpoint turned out unreadable and the job resumes from an earlier one.
  virtual Status DropRoundsAfter(const std::string& job_id, uint32_t round) = 0;
  // All jobs with their rounds, oldest first.
  virtual StatusOr<std::vector<v1::JobStatus>> LoadJobs() = 0;
  virtual Status SaveDevice(const v1::DeviceStatus& device) = 0;
  virtual StatusOr<std::vector<v1::DeviceStatus>> LoadDevices() = 0;
  // Bootstrap tokens (hashed) and device revocations.
  virtual Status SaveToken(const v1::TokenRecord& token) = 0;
  virtual StatusOr<std::vector<v1::TokenRecord>> LoadTokens() = 0;
  virtual Status SaveRevocation(const v1::DeviceRevocation& revocation) = 0;
  virtual StatusOr<std::vector<v1::DeviceRevocation>> LoadRevocations() = 0;
  // One record per device id (inserted or replaced), and its removal.
  virtual Status SaveDeviceCert(const DeviceCertRecord& record) = 0;
  virtual Status DeleteDeviceCert(const std::string& device_id) = 0;
  virtual StatusOr<std::vector<DeviceCertRecord>> LoadDeviceCerts() = 0;
  // The audit log's newest record (AuditLog calls SaveAuditHead after each durable append);
  // nullopt when none was ever recorded.
  virtual Status SaveAuditHead(const AuditHead& head) = 0;
  virtual StatusOr<std::optional<AuditHead>> LoadAuditHead() = 0;
  // Every secure sum whose unmasking began, fleet-wide and kept for good (one row per attempt):
  // a model can come back in another job (one started from it), and a second sum over it with
  // an overlapping cohort would expose single updates. `sum.job_id()` must be set.
  virtual Status SaveRevealedSum(const v1::RevealedSum& sum) = 0;
  // The sums revealed over the model with this hex BLAKE2b-256, in any job, oldest first.
  virtual StatusOr<std::vector<v1::RevealedSum>> LoadRevealedSums(
      const std::string& model_blake2b) = 0;
};

// Opens (creating if needed) the SQLite file at `path`, in WAL mode, at the current schema.
StatusOr<std::unique_ptr<JobStore>> OpenSqliteStore(const std::string& path);

}  // namespace fleet
