// Refused enrollments on their way to the audit log, coalesced so that a flood of bad requests
// costs a few records rather than one fsync each. The first refusal of a (reason, peer) pair is
// recorded at once (count 1); later ones within `interval` of it are only counted, and recorded
// as one record with their count when the interval ends (or at shutdown). Then the pair starts
// over. At most `max_pairs` pairs are tracked; refusals beyond them are counted under the peer
// "*" for their reason. Records: event "enroll_refused", actor the device id the first refusal
// named, fields reason, peer, count, and the first few device and token ids seen.
//
// Recording is best effort (a failed append is logged): refused enrollments change nothing.
// Thread-safe; one thread of its own flushes due counts, so no caller ever waits for an fsync
// it did not cause.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "common/audit_log.h"

namespace fleet {

class RefusalLog {
 public:
  using Clock = std::chrono::steady_clock;
  RefusalLog(AuditLog* audit, std::chrono::milliseconds interval, size_t max_pairs = 1024);
  ~RefusalLog();  // records every pending count
  RefusalLog(const RefusalLog&) = delete;
  RefusalLog& operator=(const RefusalLog&) = delete;

  // `reason`: a short fixed phrase (never user input); `peer`: the client's address without
  // its port.
  void Refused(const std::string& reason, const std::string& peer, const std::string& device_id,
               const std::string& token_id = "");
  // Records every pending count now.
  void Flush();

 private:
  struct Pending {
    Clock::time_point ends;
    uint64_t count = 0;  // refusals since the immediate record
    std::string actor;
    std::set<std::string> devices, tokens;  // the first few
  };
  using Key = std::pair<std::string, std::string>;  // reason, peer
  void Record(const Key& key, const Pending& p);    // without mu_
  void Loop();

  AuditLog* const audit_;
  const std::chrono::milliseconds interval_;
  const size_t max_pairs_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<Key, Pending> pending_;  // guarded by mu_
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace fleet
