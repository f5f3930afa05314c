// The one retry helper: exponential backoff with full jitter, capped.
#pragma once

#include <chrono>
#include <random>

namespace fleet {

class Backoff {
 public:
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max)
      : initial_(initial), max_(max), current_(initial), rng_(std::random_device{}()) {}

  // Next delay to sleep: uniform in [current/2, current], then current doubles up to max.
  std::chrono::milliseconds Next() {
    auto hi = current_.count();
    std::uniform_int_distribution<long long> dist(hi / 2, hi);
    current_ = std::min(max_, current_ * 2);
    return std::chrono::milliseconds(dist(rng_));
  }
  void Reset() { current_ = initial_; }

 private:
  std::chrono::milliseconds initial_, max_, current_;
  std::mt19937 rng_;  // jitter only, not security relevant
};

}  // namespace fleet
