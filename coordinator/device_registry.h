// Devices known to the coordinator: what they hold, when they were last heard from, which job
// has reserved them, and the task waiting for them. Thread-safe (one mutex).
//
// A device is online while it is long-polling FetchTask or was heard from within offline_after.
// Job runners reserve devices for a round and queue a task; a parked FetchTask picks it up.
// Long polls hold no thread: Park() stores a callback that fires exactly once, with the task or
// at its deadline (one timer thread for all of them), so 10,000 waiting devices cost 10,000
// small records, not 10,000 threads. Tasks are kept serialized and shared: every device of a
// round is sent the same bytes, never a copy per device.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "proto/fleet.pb.h"

namespace fleet {

class DeviceRegistry {
 public:
  using Clock = std::chrono::steady_clock;
  explicit DeviceRegistry(std::chrono::milliseconds offline_after);
  ~DeviceRegistry();  // completes every parked poll, stops the timer

  // Registers or refreshes a device; returns its public status (to persist). `certificate_der`:
  // the mTLS certificate it joined with, which certifies its signing key (empty with --insecure).
  v1::DeviceStatus Join(const v1::JoinRequest& request, std::string certificate_der = "");
  // Records contact and what the device reports; false when it never joined (it must Join).
  // `eligibility` null: keep the last report.
  bool Touch(const std::string& id, bool busy, const v1::Eligibility* eligibility = nullptr);
  // Devices known from the store at startup: listed (offline) until they join again.
  void Restore(const std::vector<v1::DeviceStatus>& devices);
  bool IsOnline(const std::string& id) const;
  // The Ed25519 key the device registered at Join (empty if none).
  std::string SigningKey(const std::string& id) const;
  // That key with the certificate (DER) it came with, relayed to secure-round neighbours.
  struct SecAggIdentity {
    std::string signing_key, certificate;
  };
  SecAggIdentity SecAggIdentityOf(const std::string& id) const;

  // A serialized v1::SignedTask, shared by every device it is queued for.
  using TaskBytes = std::shared_ptr<const std::string>;
  // Reserves the device for `job_id` and queues `task`. False if offline or reserved elsewhere.
  bool Reserve(const std::string& id, const std::string& job_id, TaskBytes task);
  // Releases a reservation held by `job_id` and drops its undelivered task.
  void Release(const std::string& id, const std::string& job_id);

  // Long poll: `done` runs exactly once, outside the registry's lock, with the queued task for
  // `id` or with nullptr after `max_wait` (or on WakeAll/Revoke). False (and `done` never runs)
  // when the device has not joined.
  using TaskCallback = std::function<void(TaskBytes)>;
  bool Park(const std::string& id, std::chrono::milliseconds max_wait, TaskCallback done);
  size_t parked() const;
  // Marks a device revoked: offline for good, never a candidate again.
  void Revoke(const std::string& id);
  // Forgets the device's Join (its keys and certificate) and completes its long polls: it is
  // offline until it joins again (after `fleetctl device reset`).
  void Disconnect(const std::string& id);
  // Completes every long poll with no task, and every later one at once (shutdown).
  void WakeAll();

  // Every device with `online` and `reserved_by` filled in.
  std::vector<v1::DeviceStatus> List() const;

 private:
  struct Waiter {
    std::string device;
    Clock::time_point deadline;
    TaskCallback done;
  };
  struct Record {
    v1::DeviceStatus status;
    Clock::time_point last_seen;
    int polling = 0;  // parked waiters
    std::string signing_key;
    std::string certificate;  // DER, from the device's last Join
    std::string reserved_by;
    TaskBytes pending;
  };
  using Completion = std::pair<TaskCallback, TaskBytes>;
  bool OnlineLocked(const Record& r, Clock::time_point now) const;
  // Removes waiter `wid` (if still parked) and returns its completion.
  void TakeWaiterLocked(uint64_t wid, TaskBytes task, std::vector<Completion>* out);
  // Joined since this process started (a record restored from the store has not).
  static bool Joined(const Record& r) { return r.last_seen != Clock::time_point(); }
  // Hands the device's pending task to one of its parked waiters, if any.
  void DeliverLocked(Record* r, std::vector<Completion>* out);
  // Completes the device's waiters with no task.
  void WakeDeviceLocked(const std::string& id, std::vector<Completion>* out);
  static void Run(std::vector<Completion>* completions);
  void TimerLoop();

  const std::chrono::milliseconds offline_after_;
  mutable std::mutex mu_;
  std::condition_variable timer_cv_;
  std::map<std::string, Record> devices_;
  uint64_t next_waiter_ = 1;
  std::map<uint64_t, Waiter> waiters_;
  std::multimap<std::string, uint64_t> waiters_by_device_;
  std::multimap<Clock::time_point, uint64_t> deadlines_;
  bool stopping_ = false;
  std::thread timer_;
};

}  // namespace fleet
