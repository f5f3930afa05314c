// Per-peer token buckets for the enrollment service, which anyone who can reach the coordinator
// can call: each peer (client IP address) may make `burst` requests at once and `per_minute` a
// minute after that. A request over the limit is told how long to wait. At most `max_peers`
// buckets are kept; a full table first forgets peers whose buckets have refilled (they are as
// good as new), and when none has, the new peer shares one overflow bucket with every other peer
// not in the table, so a flood from many addresses is still bounded. Time is injected.
// Thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>

namespace fleet {

class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  RateLimiter(uint32_t burst, uint32_t per_minute, size_t max_peers = 10000,
              std::function<Clock::time_point()> now = Clock::now);

  // Takes one request from `peer`'s bucket: true if it may go ahead; otherwise false and
  // *retry_after is when its next request would be let through.
  bool Allow(const std::string& peer, std::chrono::milliseconds* retry_after);

 private:
  struct Bucket {
    double tokens = 0;
    Clock::time_point updated;
  };
  void Refill(Bucket* b, Clock::time_point now) const;

  const double burst_, per_ms_;
  const size_t max_peers_;
  const std::function<Clock::time_point()> now_;
  std::mutex mu_;
  std::map<std::string, Bucket> buckets_;  // guarded by mu_
  Bucket overflow_;                        // guarded by mu_
  bool overflow_started_ = false;          // guarded by mu_
  Clock::time_point last_sweep_{};         // guarded by mu_
};

}  // namespace fleet
