// The device agent's main loop: join the coordinator (retrying with backoff and jitter while it
// is away), heartbeat, long-poll for tasks, train or evaluate locally, send results.
//
// Run() blocks on the calling thread; Stop() may be called from any thread. Raw data never
// leaves the device: only model parameters and aggregate metrics are sent.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "aggregation/secagg_client.h"
#include "client/client_config.h"
#include "client/control/training_gate.h"
#include "client/data_source.h"
#include "client/identity.h"
#include "client/model_guard.h"
#include "client/trainer.h"
#include "client/unmask_history.h"
#include "common/model_layout.h"
#include "common/tensor_codec.h"
#include "crypto/keys.h"
#include "crypto/pki.h"
#include "proto/fleet.grpc.pb.h"

namespace fleet {

// What the device's inference/control loop (client/control/) needs from the training side.
struct ControlHooks {
  std::string model_dataset;  // deliver verified global models of jobs on this dataset
  // Called on the runner thread with a verified global model (and at start with the last one
  // kept in state_dir, re-verified). Must not block for long.
  std::function<void(const v1::Task& task, std::vector<float> params)> on_global_model;
  // Training runs at SCHED_IDLE and waits on this gate between mini-batches.
  control::TrainingGate* gate = nullptr;
  // Optional: a training dataset of this name read from the sample buffer (re-read before each
  // Join and each task on it), split off `validation_fraction` for local validation.
  std::string buffer_dataset;
  double validation_fraction = 0.2;
  std::function<StatusOr<Dataset>()> read_buffer;
};

class ClientRunner {
 public:
  static StatusOr<std::unique_ptr<ClientRunner>> Create(ClientConfig config,
                                                        ControlHooks hooks = {});
  ~ClientRunner();

  // Returns OK after Stop(), or the fatal error (e.g. protocol version mismatch).
  Status Run();
  void Stop();
  const std::string& device_id() const { return config_.device_id; }
  // The heartbeat thread ticked recently (for the systemd watchdog).
  bool Healthy() const;

 private:
  struct LocalData {
    DatasetSpec spec;
    Dataset train, val, eval;
  };

  explicit ClientRunner(ClientConfig config, ControlHooks hooks);
  // Local training at the priority the control loop needs (see ControlHooks).
  StatusOr<TrainResult> Train(const v1::Task& task, const ModelLayout& layout,
                              const std::vector<TensorView>& global, const LocalData& data);
  // Hands a verified model to the control loop and keeps it (as signed) for the next start.
  void OfferToControl(const v1::Task& task, const v1::SignedTask& signed_task,
                      const ModelLayout& layout, const std::vector<TensorView>& params);
  // At start: the model kept by OfferToControl, if it still verifies.
  void RestoreControlModel();
  Status LoadData();
  // Re-reads the buffer-backed dataset (ControlHooks::read_buffer), if any.
  void RefreshBufferData();
  // The current Device stub (replaced when the certificate is renewed).
  std::shared_ptr<v1::Device::Stub> Stub();
  Status Connect(const ClientTlsOptions& tls);
  // Unix seconds on the (test-injectable) certificate clock.
  int64_t Now() const;
  // Loads this device's certificate (unless the coordinator refused it: refused_), or enrolls
  // with the bootstrap token. Unavailable, DeadlineExceeded or ResourceExhausted: retry (not
  // before enroll_retry_after_).
  Status EnsureIdentity();
  // Uses `creds` from now on: stores them, rebuilds the channel, keeps the model guard.
  Status Adopt(DeviceCredentials creds);
  // Renews at 2/3 of the certificate's lifetime, or at once when the credentials hold no
  // certified SecAgg signing key; re-enrolls once the certificate has expired.
  void MaybeRenew();
  // The key that signs this device's SecAgg messages: the certified one (null until the device
  // has one), or with --insecure a per-process key.
  const crypto::SigningKey* SecAggSigningKey() const;
  // The coordinator refused our certificate (revoked, expired, replaced or reset): the main loop
  // enrolls again (EnsureIdentity) if the bootstrap token allows, else stops with a fatal error
  // saying the device needs re-provisioning.
  void Reenroll(const std::string& refusal);
  // The task inside `signed_task` once the model guard let it through (signature over the
  // received bytes, then no rollback); `record` keeps its round durably before returning.
  // --insecure: parsed unchecked.
  StatusOr<v1::Task> OpenTask(const v1::SignedTask& signed_task, bool record);
  Status Join();
  void HeartbeatLoop();
  // Opens one fetched task and runs it, or declines it with the reason it was refused.
  void HandleSignedTask(const v1::SignedTask& signed_task);
  Status HandleTask(const v1::Task& task, const v1::SignedTask& signed_task);
  // Tells the coordinator this device will not run `task` (why), so its round stops waiting.
  Status Decline(const v1::Task& task, const Status& why);
  Status SendUpdate(const v1::UpdateHeader& header, const std::string& payload);
  Status SendUpdateOnce(const v1::UpdateHeader& header, const std::string& payload);
  // A TRAIN task of a secure job: the SecAgg+ client protocol around local training.
  Status TrainSecurely(const v1::Task& task, const ModelLayout& layout,
                       const std::vector<TensorView>& global, const LocalData& data,
                       v1::UpdateHeader header,
                       const std::function<Status(const Status&)>& decline);
  // One SecAgg RPC (ids filled in), waiting at most `timeout` for its stage to close.
  StatusOr<v1::SecAggResponse> SecAggStep(const v1::Task& task, v1::SecAggRequest request,
                                          std::chrono::milliseconds timeout);
  // OK when this device may take part in a secure aggregation over (job, model): its unmask
  // record is readable and does not hold the pair. The error is the decline reason.
  Status MaySecurelyAggregate(const std::string& job_id, const std::string& model_hash) const;
  void SetContext(grpc::ClientContext* ctx);
  void MaybeFault(const std::string& step);
  bool SleepUnlessStopped(std::chrono::milliseconds d);

  ControlHooks hooks_;
  bool control_model_restored_ = false;  // main loop only
  ClientConfig config_;  // coordinator resolved from the bootstrap file when unset
  std::shared_ptr<v1::Device::Stub> stub_;  // guarded by mu_
  std::unique_ptr<DeviceCredentials> creds_;  // main loop only; null when --insecure
  std::string refused_;  // main loop only: why the coordinator refused the stored certificate
  std::chrono::milliseconds enroll_retry_after_{0};  // main loop only: the coordinator's hint
  int64_t next_renewal_attempt_ = 0;
  // Main loop only; set with the credentials (Adopt), kept across renewals with the same key.
  std::unique_ptr<ModelGuard> guard_;
  // state_dir/accepted-rounds, loaded in Create; null when --insecure. Main loop only.
  std::unique_ptr<AcceptedRoundsFile> accepted_;
  std::map<std::string, LocalData> data_;
  // --insecure only: signs this device's secure-aggregation messages, made per process (there is
  // no certificate to certify a key). With TLS the key is creds_->secagg_key.
  std::unique_ptr<crypto::SigningKey> insecure_signing_key_;
  // Main loop only: checks neighbours' certificates against the pinned CA (made with the
  // credentials; null with --insecure), caching the ones that passed across rounds.
  std::unique_ptr<crypto::CertificateVerifier> verifier_;
  std::string verifier_ca_;
  // Main loop only: attempt nonces of secure rounds this process took part in.
  AttemptNonces attempt_nonces_;
  // The (job, model) pairs this device sent unmask shares for; unset (with the reason in
  // unmask_history_error_) when its file is unreadable. Main loop only.
  std::optional<UnmaskHistory> unmask_history_;
  Status unmask_history_error_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                       // guarded by mu_
  grpc::ClientContext* active_ = nullptr;   // guarded by mu_; cancelled by Stop()
  std::atomic<bool> joined_{false};
  std::atomic<bool> busy_{false};
  std::atomic<uint32_t> heartbeat_ms_{1000};
  std::atomic<int64_t> heartbeat_tick_ms_{0};  // steady-clock ms of the last heartbeat loop turn
};

}  // namespace fleet
