// Devices known to the coordinator: what they hold, when they were last heard from, which job
// has reserved them, and the task waiting for them. Thread-safe (one mutex).
//
// A device is online while it is long-polling FetchTask or was heard from within offline_after.
// Job runners reserve devices for a round and hand them a task; FetchTask picks it up.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "proto/fleet.pb.h"

namespace fleet {

class DeviceRegistry {
 public:
  using Clock = std::chrono::steady_clock;
  explicit DeviceRegistry(std::chrono::milliseconds offline_after);

  // Registers or refreshes a device; returns its public status (to persist).
  v1::DeviceStatus Join(const v1::JoinRequest& request);
  // Records contact and what the device reports; false when it never joined (it must Join).
  // `eligibility` null: keep the last report.
  bool Touch(const std::string& id, bool busy, const v1::Eligibility* eligibility = nullptr);
  // Devices known from the store at startup: listed (offline) until they join again.
  void Restore(const std::vector<v1::DeviceStatus>& devices);
  bool IsKnown(const std::string& id) const;
  bool IsOnline(const std::string& id) const;
  // The Ed25519 key the device registered at Join (empty if none).
  std::string SigningKey(const std::string& id) const;

  // Online, unreserved devices holding `dataset` with training (or evaluation) examples.
  std::vector<std::string> Candidates(const std::string& dataset, bool training) const;

  // Reserves the device for `job_id` and queues `task`. False if offline or reserved elsewhere.
  bool Reserve(const std::string& id, const std::string& job_id,
               std::shared_ptr<const v1::Task> task);
  // Releases a reservation held by `job_id` and drops its undelivered task.
  void Release(const std::string& id, const std::string& job_id);

  // Long poll: the queued task for `id`, or nullptr after `max_wait`.
  std::shared_ptr<const v1::Task> WaitForTask(const std::string& id,
                                              std::chrono::milliseconds max_wait);
  // Marks a device revoked: offline for good, never a candidate again.
  void Revoke(const std::string& id);
  // Wakes every long poll (shutdown).
  void WakeAll();

  // Every device with `online` and `reserved_by` filled in.
  std::vector<v1::DeviceStatus> List() const;

 private:
  struct Record {
    v1::DeviceStatus status;
    Clock::time_point last_seen;
    int polling = 0;
    std::string signing_key;
    std::string reserved_by;
    std::shared_ptr<const v1::Task> pending;
  };
  bool OnlineLocked(const Record& r, Clock::time_point now) const;

  const std::chrono::milliseconds offline_after_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Record> devices_;
  uint64_t wake_generation_ = 0;
};

}  // namespace fleet
