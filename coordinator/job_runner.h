// Runs one federated job on its own thread: for each round, select clients, send the global
// model, collect updates until every selected client answered, went offline, or the deadline
// passed, aggregate, evaluate on the clients holding evaluation data, then commit: checkpoint
// files first, then one store transaction with the round summary and the checkpoint record.
// Until that commit nothing of the round is durable, so a crash costs exactly the round in
// flight: a runner created with `resume` continues after the last committed round.
//
// Thread-safety: OnUpdate/OnMetrics/OnSecAgg/Snapshot/Stop are called from gRPC threads; all
// shared state is guarded by mu_. Status changes are reported through the `changed` callback (no
// lock held).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "aggregation/quantize.h"
#include "aggregation/secagg_server.h"
#include "aggregation/strategy.h"
#include "common/audit_log.h"
#include "common/model_layout.h"
#include "coordinator/checkpoint.h"
#include "coordinator/device_registry.h"
#include "coordinator/selection.h"
#include "coordinator/store.h"
#include "crypto/keys.h"
#include "proto/fleet.pb.h"

namespace fleet {

struct RunnerOptions {
  std::string checkpoint_dir;                     // <state_dir>/checkpoints/<job id>
  const crypto::SigningKey* model_key = nullptr;  // signs every task (null: unsigned)
  // Round completions, recorded before each commit (fail closed: a round that cannot be
  // recorded fails the job). Null: none (unit tests).
  AuditLog* audit = nullptr;
  std::chrono::milliseconds wait_poll{200};       // how often waits re-check liveness
  // Continue a job loaded from the store after a coordinator restart: from the newest checkpoint
  // that verifies (rounds after it are forgotten and run again).
  bool resume = false;
  // Unfinished jobs (this one included) that want devices holding `dataset`: for fair sharing.
  std::function<uint32_t(const std::string& dataset)> competing_jobs;
};

class JobRunner {
 public:
  static StatusOr<std::unique_ptr<JobRunner>> Create(v1::JobStatus job, DeviceRegistry* registry,
                                                     JobStore* store, RunnerOptions options,
                                                     std::function<void()> changed);
  ~JobRunner();  // stops and joins

  void Start();
  bool Started() const { return thread_.joinable(); }
  // The job ends STOPPED with `reason` as its error (unless already finished).
  void Stop(const std::string& reason = "stopped by an administrator");
  // Coordinator shutdown: the runner exits without recording an end state, so the job stays
  // RUNNING in the store and the next coordinator resumes it from its last committed round.
  void Halt();

  // Largest PushUpdate payload this job accepts (the encoded model plus a small margin).
  size_t max_update_bytes() const { return max_update_bytes_; }
  const std::string& dataset() const { return dataset_; }

  // A TRAIN result. Validates against the job's layout and folds it into the aggregate.
  Status OnUpdate(const v1::UpdateHeader& header, std::string_view payload);
  // Asked before a PushUpdate stream takes an ingest slot or buffers anything: would OnUpdate
  // take an update with this header now (the round collects, the device was selected and has not
  // answered; secure: it still owes its masked input)? The same refusals OnUpdate gives
  // (FAILED_PRECONDITION, ALREADY_EXISTS, INVALID_ARGUMENT). On OK, *until is when the round
  // stops collecting updates. Takes the runner's lock for a few comparisons only.
  Status AdmitUpload(const v1::UpdateHeader& header,
                     std::chrono::steady_clock::time_point* until) const;
  // An EVALUATE result.
  Status OnMetrics(const v1::MetricsReport& report);
  // Answers one SecAgg RPC. Called exactly once, never with the runner's lock held.
  using SecAggReply = std::function<void(StatusOr<v1::SecAggResponse>)>;
  // One SecAgg+ step of the current round: hands the message to the state machine and parks the
  // call (no thread waits for it) until that stage closes; `reply` then gets the device's input
  // for the next stage. Errors are replied at once. The runner thread answers parked calls.
  void OnSecAgg(const v1::SecAggRequest& request, SecAggReply reply);

  v1::JobStatus Snapshot() const;
  bool Finished() const;

 private:
  JobRunner(v1::JobStatus job, ModelLayout layout, std::unique_ptr<Strategy> strategy,
            DeviceRegistry* registry, JobStore* store, RunnerOptions options,
            std::function<void()> changed);
  // Loads the newest checkpoint that verifies and records the restart; sets next_round_.
  Status Resume();

  enum class Phase { kIdle, kTrain, kEvaluate };
  struct RoundState {
    Phase phase = Phase::kIdle;
    uint32_t round = 0;
    uint32_t target = 0;              // plain training rounds close at this many updates
    std::set<std::string> selected;
    std::set<std::string> answered;   // updates accepted or rejected, metrics received
    uint32_t rejected = 0;
    std::vector<EvalMetrics> evals;
    bool secagg_started = false;  // RunSecureStages installed secagg_ (or failed to)
    std::string attempt_nonce;    // secure rounds: this attempt's, sent in the TRAIN task
    // When the round stops taking updates (the bound of every PushUpdate stream for it): the
    // plain round's deadline; for a secure round the masked-input stage's, once it opened.
    std::chrono::steady_clock::time_point uploads_until;
  };
  // A SecAgg call whose stage has not closed yet.
  struct ParkedStep {
    SecAggServer::Stage stage;
    SecAggReply reply;
  };
  using Replies = std::vector<std::pair<SecAggReply, StatusOr<v1::SecAggResponse>>>;

  void Run();
  // Returns true when the round aggregated, false (with *why) when it must be retried.
  bool RunRound(uint32_t round, v1::RoundSummary* summary, std::string* why);
  // The SecAgg+ stages of a round whose devices are reserved; fills the summary.
  bool RunSecureStages(uint32_t round, v1::RoundSummary* summary, std::string* why);
  bool secure() const { return !job_.spec().secure_aggregation().disabled(); }
  Status OnMaskedUpdate(const v1::UpdateHeader& header, std::string_view payload);
  // Revealed sums (docs/security.md, "Secure aggregation"). A model version is (job, BLAKE2b-256
  // of the encoded global model a round's task carries); once the Unmask stage of a sum over it
  // opened, no further sum over that version may include any device of that sum.
  //
  // The devices in this job's revealed sums over the model this round trains from (the job row
  // and the store's table, which keeps them for good), each with its sum's name. Every device
  // when the table cannot be read (fail closed).
  RevealedExclusions RevealedOverCurrentModel() const;
  // Durably records the sum of `survivors` (round, attempt_, round_model_hash_) in the store's
  // fleet-wide table and the job row.
  // Called before the first unmask request of the attempt leaves; on error none may leave.
  Status RecordRevealed(uint32_t round, std::vector<std::string> survivors);
  // The attempt ended without a committed round: if its sum was revealed, records the failure as
  // final for its devices (round history, audit log). No-op otherwise.
  void RecordFailureAfterUnmask(uint32_t round, const std::string& why);
  // Resume(): sums of rounds that are run again (not committed, or their checkpoint was lost)
  // were revealed by an attempt that failed. Runs before Start().
  void MarkRevealsOfReplayedRounds();
  // Under mu_: the revealed sum of (round, attempt), or null.
  v1::RevealedSum* RevealedLocked(uint32_t round, uint32_t attempt);
  // Under mu_: appends to job_.aborts (bounded).
  void AddAbortLocked(uint32_t round, const std::string& reason, bool after_unmask);
  // The attempt number for the next try of `round`: after `failures` in this process, and after
  // every attempt with a revealed sum (those survive restarts).
  uint32_t NextAttempt(uint32_t round, uint32_t failures) const;
  // Under mu_: the checks OnUpdate (plain) and OnMaskedUpdate make before looking at a payload.
  Status AdmitPlainUploadLocked(const v1::UpdateHeader& header) const;
  Status AdmitMaskedUploadLocked(const v1::UpdateHeader& header) const;
  // Under mu_: hands one step to secagg_. Returns the answer, or parks *reply and returns nullopt.
  std::optional<StatusOr<v1::SecAggResponse>> SecAggStepLocked(const v1::SecAggRequest& req,
                                                               SecAggReply* reply);
  // Under mu_: takes the parked calls whose stage closed (every one once the round is over) with
  // their answers, to be sent after unlocking.
  Replies TakeAnsweredLocked();
  static void Send(Replies* replies);  // without mu_
  // Waits until every selected device answered or went offline, the deadline, or Stop().
  void WaitForAnswers(std::chrono::steady_clock::time_point deadline);
  void Evaluate(uint32_t round, v1::RoundSummary* summary);
  void SetGlobal(std::vector<float> params);
  // The task as a SignedTask (proto/fleet.proto): serialized once, signed over those bytes, and
  // shared by every device it is sent to. A secure TRAIN task carries `attempt_nonce` in its
  // SecAggTaskConfig.
  DeviceRegistry::TaskBytes MakeTask(v1::Task::Kind kind, uint32_t round,
                                     const std::string& attempt_nonce = "") const;
  // Makes the round durable (checkpoint files, then summary + checkpoint record + job row in one
  // transaction) and publishes the summary.
  Status CommitRound(const v1::RoundSummary& summary);
  // The round's "round_complete" audit record.
  Status AuditRound(const v1::RoundSummary& summary);
  void SetState(v1::JobStatus::State state, const std::string& error = "");
  void Persist();

  const ModelLayout layout_;
  const std::unique_ptr<Strategy> strategy_;
  ServerOptimizer server_optimizer_;  // runner thread only
  std::map<std::string, uint32_t> last_round_;  // device -> last round selected; runner thread
  DeviceRegistry* const registry_;
  JobStore* const store_;
  const RunnerOptions options_;
  const std::function<void()> changed_;
  const CheckpointDir checkpoints_;
  const std::string dataset_;
  uint32_t next_round_ = 1;           // the first round Run() plays
  uint32_t attempt_ = 1;              // of the round in flight; runner thread
  std::string round_model_hash_;      // hex BLAKE2b-256 of the model it trains from; runner thread
  std::string initial_model_hash_;    // ... of the seed's initial model (a restart can fall back)
  size_t max_update_bytes_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  v1::JobStatus job_;            // guarded by mu_
  RoundState round_;             // guarded by mu_
  // The current (or last) secure round's state machine; shared so that RPC handlers still
  // answer from it after the runner moved on. Guarded by mu_.
  std::shared_ptr<SecAggServer> secagg_;
  std::map<std::string, ParkedStep> parked_;  // by device, at most one each; guarded by mu_
  // Steps that came before RunSecureStages installed secagg_. Guarded by mu_.
  std::vector<std::pair<v1::SecAggRequest, SecAggReply>> early_;
  QuantizationSpec quant_;
  std::vector<float> global_;    // written only by the runner thread
  std::string global_encoded_;   // EncodeParameters(global_), refreshed with it
  std::atomic<bool> stop_{false};
  bool halted_ = false;          // guarded by mu_
  std::string stop_reason_;      // guarded by mu_
  std::thread thread_;
};

}  // namespace fleet
