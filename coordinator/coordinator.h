// The coordinator's core, independent of how it is served: jobs, devices and the device/admin
// operations the gRPC services expose. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "coordinator/device_registry.h"
#include "coordinator/job_runner.h"
#include "coordinator/store.h"

namespace fleet {

struct CoordinatorOptions {
  std::string state_dir;
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds offline_after{4000};
};

class Coordinator {
 public:
  static StatusOr<std::unique_ptr<Coordinator>> Create(CoordinatorOptions options);
  ~Coordinator();

  const CoordinatorOptions& options() const { return options_; }
  DeviceRegistry& registry() { return registry_; }

  // Device side.
  Status Join(const v1::JoinRequest& request);
  Status OnUpdate(const v1::UpdateHeader& header, std::string_view payload);
  Status OnMetrics(const v1::MetricsReport& report);
  // One SecAgg+ step; blocks until the step's stage closes.
  StatusOr<v1::SecAggResponse> OnSecAgg(const v1::SecAggRequest& request);
  // Largest payload accepted for `job_id`; NOT_FOUND for unknown jobs.
  StatusOr<size_t> MaxUpdateBytes(const std::string& job_id);

  // Admin side.
  StatusOr<v1::JobStatus> SubmitJob(const v1::JobSpec& spec);
  StatusOr<v1::JobStatus> GetJob(const std::string& id);
  std::vector<v1::JobStatus> ListJobs();
  StatusOr<v1::JobStatus> StopJob(const std::string& id);

  // Blocks until any job changed after `*version` or `timeout` passed; updates *version.
  void WaitForChange(uint64_t* version, std::chrono::milliseconds timeout);

  // Stops every job and wakes every waiter (server shutdown).
  void Shutdown();

 private:
  explicit Coordinator(CoordinatorOptions options, std::unique_ptr<JobStore> store);
  Status Recover();
  void NotifyChanged();
  JobRunner* FindRunner(const std::string& id);

  const CoordinatorOptions options_;
  std::unique_ptr<JobStore> store_;
  DeviceRegistry registry_;

  std::mutex mu_;
  std::map<std::string, std::unique_ptr<JobRunner>> runners_;  // guarded by mu_
  std::map<std::string, v1::JobStatus> finished_;  // jobs loaded from disk; guarded by mu_

  std::mutex change_mu_;
  std::condition_variable change_cv_;
  uint64_t version_ = 0;  // guarded by change_mu_
};

}  // namespace fleet
