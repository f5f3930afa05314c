// The coordinator's core, independent of how it is served: jobs, devices and the device/admin
// operations the gRPC services expose. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/audit_log.h"
#include "coordinator/access.h"
#include "coordinator/audit_trail.h"
#include "coordinator/authority.h"
#include "coordinator/device_certs.h"
#include "coordinator/device_registry.h"
#include "coordinator/job_runner.h"
#include "coordinator/refusal_log.h"
#include "coordinator/registrar.h"
#include "coordinator/store.h"
#include "coordinator/upload_slots.h"

namespace fleet {

struct CoordinatorOptions {
  std::string state_dir;
  // No TLS: no identities are checked and models go unsigned unless a PKI exists (warned).
  bool insecure = false;
  int64_t device_cert_lifetime_s = 7 * 86400;
  int64_t clock_offset_s = 0;  // test-only: shifts the clock used for certificate decisions
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds offline_after{4000};
  // Updates buffered at once by PushUpdate (each up to one model): bounds ingest memory.
  uint32_t max_concurrent_updates = 8;
  // Refused enrollments of one (reason, peer) within this interval share an audit record.
  std::chrono::milliseconds enroll_audit_interval{60000};
  // A separate CA process (host:port) that holds the CA key and the tokens, reached over mTLS
  // with `ca_tls`; empty: the registrar runs in this process (state_dir/pki/ca.key).
  std::string ca_endpoint;
  ClientTlsOptions ca_tls;
};

class Coordinator {
 public:
  static StatusOr<std::unique_ptr<Coordinator>> Create(CoordinatorOptions options);
  ~Coordinator();

  const CoordinatorOptions& options() const { return options_; }
  DeviceRegistry& registry() { return registry_; }
  AccessControl& access() { return *access_; }
  AuditLog& audit() { return *audit_; }
  UploadSlots& upload_slots() { return upload_slots_; }
  RefusalLog& refusals() { return *refusals_; }
  // Unix seconds on the (injectable) certificate clock.
  int64_t Now() const;

  // Enrollment (server-authenticated TLS, bootstrap token) from `peer` (the client's address,
  // for the audit log's refusal records). Refused while the id has a valid certificate.
  StatusOr<v1::EnrollResponse> Enroll(const v1::EnrollRequest& request, const std::string& peer);
  // Renewal over mTLS with the device's current certificate (`certificate_pem`, which the new
  // one replaces), proving possession of its key.
  StatusOr<v1::EnrollResponse> Renew(const v1::RenewRequest& request,
                                     const std::string& certificate_pem);
  // Bootstrap tokens (the registrar's; refused with a separate CA, which makes them itself).
  StatusOr<std::pair<std::string, v1::TokenInfo>> CreateToken(const TokenSpec& spec,
                                                              const std::string& by);
  StatusOr<std::vector<v1::TokenInfo>> ListTokens();
  StatusOr<v1::TokenInfo> RevokeToken(const std::string& id, const std::string& by);

  // Device side. `certificate_pem`: the caller's mTLS certificate (empty with --insecure). With
  // TLS a Join's SecAgg signing key must be the one that certificate certifies (PERMISSION_DENIED
  // otherwise): a new key needs a new certificate, from Renew or re-enrollment. A Join without a
  // key registers none (the device then takes no part in secure rounds).
  Status Join(const v1::JoinRequest& request, const std::string& certificate_pem);
  Status OnUpdate(const v1::UpdateHeader& header, std::string_view payload);
  Status OnMetrics(const v1::MetricsReport& report);
  // One SecAgg+ step; `reply` is called once, when the step's stage closes or on an error.
  void OnSecAgg(const v1::SecAggRequest& request, JobRunner::SecAggReply reply);
  // Largest payload accepted for `job_id`; NOT_FOUND for unknown jobs.
  StatusOr<size_t> MaxUpdateBytes(const std::string& job_id);
  // Whether the job would take an update with this header now (JobRunner::AdmitUpload); *until
  // is when its round stops collecting. NOT_FOUND for unknown jobs.
  Status AdmitUpload(const v1::UpdateHeader& header, std::chrono::steady_clock::time_point* until);

  // Admin side.
  StatusOr<v1::JobStatus> SubmitJob(const v1::JobSpec& spec, const std::string& by);
  StatusOr<v1::JobStatus> GetJob(const std::string& id);
  std::vector<v1::JobStatus> ListJobs();
  StatusOr<v1::JobStatus> StopJob(const std::string& id, const std::string& by);
  StatusOr<uint32_t> RevokeDevice(const std::string& id, const std::string& by);
  // `fleetctl device reset`: forgets the device's current certificate (audited first; fails
  // closed), cancels its open calls and its Join, so it can enroll again with a token.
  StatusOr<v1::ResetDeviceResponse> ResetDevice(const std::string& id, const std::string& by);

  // Blocks until any job changed after `*version` or `timeout` passed; updates *version.
  void WaitForChange(uint64_t* version, std::chrono::milliseconds timeout);

  // Takes and releases the coordinator's and the registry's locks: false never, but hangs on a
  // deadlock, which is what the systemd watchdog is there to catch.
  bool Probe();

  // Starts the runners of jobs resumed from the state database (call once the services listen).
  void StartRecovered();

  // Stops every job and wakes every waiter (server shutdown).
  void Shutdown();

 private:
  explicit Coordinator(CoordinatorOptions options, std::unique_ptr<JobStore> store);
  Status Recover();
  RunnerOptions RunnerOptionsFor(const std::string& job_id, bool resume);
  void NotifyChanged();
  JobRunner* FindRunner(const std::string& id);

  // The registrar, or null with *error saying there is none (--insecure without a PKI).
  Registrar* RegistrarOrError(Status* error);
  // The device's answer for a certificate the registrar issued; with a separate CA also
  // recorded here (current certificate, audit record; fail closed).
  StatusOr<v1::EnrollResponse> Answer(const std::string& device_id,
                                      const v1::CaIssueResponse& issued, const char* event,
                                      const std::string& renewing);

  const CoordinatorOptions options_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<AuditLog> audit_;
  std::unique_ptr<Authority> authority_;  // null: insecure without a PKI
  std::unique_ptr<DeviceCertificates> certs_;
  std::unique_ptr<AccessControl> access_;
  std::unique_ptr<RefusalLog> refusals_;
  std::unique_ptr<Registrar> registrar_;  // null: insecure without a PKI
  DeviceRegistry registry_;
  UploadSlots upload_slots_;

  std::mutex mu_;
  std::map<std::string, std::unique_ptr<JobRunner>> runners_;  // guarded by mu_
  std::map<std::string, v1::JobStatus> finished_;  // jobs loaded from disk; guarded by mu_

  std::mutex change_mu_;
  std::condition_variable change_cv_;
  uint64_t version_ = 0;  // guarded by change_mu_
};

}  // namespace fleet
