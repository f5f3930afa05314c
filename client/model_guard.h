// Which tasks a device acts on. Every task arrives as a SignedTask (proto/fleet.proto): the
// serialized Task and the coordinator's Ed25519 signature over exactly those bytes. The guard
// verifies the signature with the model-signing key learned at enrollment BEFORE it parses the
// bytes, so everything the device acts on (model spec, training settings, SecAgg configuration,
// parameters, job, round, seed) is what the coordinator signed. Then it refuses a task ordered
// before the newest one already accepted for its job (rollback): tasks are ordered by
// (resume_epoch, round), and equal is accepted (a round's TRAIN and EVALUATE tasks, a retried
// round, the round a restarted coordinator replays). The newest mark per job lives in an
// AcceptedRoundsFile and is written and fsynced before a task is handed back to act on, so the
// check holds across restarts of the device. A refused task changes nothing: the previous good
// model stays in use.
//
// Not thread-safe: the client's main loop owns both classes. ModelGuard does not own the file.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "crypto/keys.h"
#include "proto/fleet.pb.h"

namespace fleet {

// A job's position in time as the coordinator signs it.
struct TaskMark {
  uint32_t resume_epoch = 0;
  uint32_t round = 0;
  bool operator<(const TaskMark& o) const {
    return resume_epoch != o.resume_epoch ? resume_epoch < o.resume_epoch : round < o.round;
  }
};

// The newest accepted TaskMark per job, kept in one file (0600, replaced atomically and fsynced on
// every change). Jobs are named by the ids their signed tasks carry.
class AcceptedRoundsFile {
 public:
  // Loads `path`; a missing file means nothing was accepted yet. A damaged file is a DataLoss
  // error naming it (the device refuses to start rather than forget what it accepted). An empty
  // path keeps the marks in memory only.
  static StatusOr<std::unique_ptr<AcceptedRoundsFile>> Open(std::string path);

  // The newest mark accepted for `job`, or nullptr.
  const TaskMark* Newest(const std::string& job) const;
  // Keeps `mark` for `job` if it is newer than the kept one, durably before returning. On a
  // write error nothing changes (in memory or on disk) and the error names the file.
  Status Record(const std::string& job, TaskMark mark);
  const std::string& path() const { return path_; }

 private:
  explicit AcceptedRoundsFile(std::string path) : path_(std::move(path)) {}
  std::string path_;
  std::map<std::string, TaskMark> newest_;
};

class ModelGuard {
 public:
  // `accepted` null: an in-memory file owned by the guard (tests, one process lifetime).
  explicit ModelGuard(const crypto::Bytes32& model_key, AcceptedRoundsFile* accepted = nullptr);

  // The task to act on: signature verified over the received bytes, parsed from them, not a
  // rollback, and its mark recorded durably. PermissionDenied naming the reason (not signed,
  // signature does not verify, rollback); InvalidArgument for malformed envelopes.
  StatusOr<v1::Task> Accept(const v1::SignedTask& signed_task);
  // The same checks without recording anything: for a model kept on the device
  // (state_dir/control-model.task) and offered again after a restart.
  StatusOr<v1::Task> Check(const v1::SignedTask& signed_task) const;

  const crypto::Bytes32& key() const { return key_; }

 private:
  crypto::Bytes32 key_;
  std::unique_ptr<AcceptedRoundsFile> owned_;
  AcceptedRoundsFile* accepted_;
};

// The job, round and kind a task claims, parsed WITHOUT verification: only for declining a
// refused task, so the round does not wait for this device. Nothing else of a refused task is
// used.
v1::Task ClaimedIdentity(const v1::SignedTask& signed_task);

}  // namespace fleet
