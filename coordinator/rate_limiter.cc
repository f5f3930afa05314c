#include "coordinator/rate_limiter.h"

#include <algorithm>
#include <cmath>

namespace fleet {

RateLimiter::RateLimiter(uint32_t burst, uint32_t per_minute, size_t max_peers,
                         std::function<Clock::time_point()> now)
    : burst_(std::max<uint32_t>(burst, 1)),
      per_ms_(std::max<uint32_t>(per_minute, 1) / 60000.0),
      max_peers_(std::max<size_t>(max_peers, 1)),
      now_(std::move(now)) {}

void RateLimiter::Refill(Bucket* b, Clock::time_point now) const {
  const double ms = std::chrono::duration<double, std::milli>(now - b->updated).count();
  if (ms > 0) b->tokens = std::min(burst_, b->tokens + ms * per_ms_);
  b->updated = std::max(b->updated, now);
}

bool RateLimiter::Allow(const std::string& peer, std::chrono::milliseconds* retry_after) {
  const Clock::time_point now = now_();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = buckets_.find(peer);
  Bucket* b = nullptr;
  if (it != buckets_.end()) {
    b = &it->second;
  } else {
    // The sweep is O(peers): at most once a second, so a flood of new addresses cannot make
    // every request pay for it.
    if (buckets_.size() >= max_peers_ && now - last_sweep_ >= std::chrono::seconds(1)) {
      last_sweep_ = now;
      for (auto i = buckets_.begin(); i != buckets_.end();) {
        Refill(&i->second, now);
        i = i->second.tokens >= burst_ ? buckets_.erase(i) : std::next(i);
      }
    }
    if (buckets_.size() < max_peers_) {
      b = &buckets_[peer];
      b->tokens = burst_;
      b->updated = now;
    } else {
      if (!overflow_started_) {
        overflow_.tokens = burst_;
        overflow_.updated = now;
        overflow_started_ = true;
      }
      b = &overflow_;
    }
  }
  Refill(b, now);
  if (b->tokens >= 1) {
    b->tokens -= 1;
    return true;
  }
  *retry_after =
      std::chrono::milliseconds(static_cast<int64_t>(std::ceil((1 - b->tokens) / per_ms_)));
  return false;
}

}  // namespace fleet
