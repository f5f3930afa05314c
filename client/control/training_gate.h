// How the control loop keeps training off its back: a missed inference deadline pauses local
// training for a while; the trainer calls WaitIfPaused() between mini-batches. The training
// thread itself runs at SCHED_IDLE (see RunAtTrainingPriority), so the kernel already prefers
// the control thread; the gate covers what priorities cannot (shared caches, memory bandwidth).
//
// Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>

#include "common/status.h"

namespace fleet::control {

class TrainingGate {
 public:
  void PauseFor(std::chrono::milliseconds d) {
    std::lock_guard<std::mutex> lock(mu_);
    auto until = std::chrono::steady_clock::now() + d;
    if (until > until_) until_ = until;
    ++pauses_;
  }
  // Returns at once unless paused; then sleeps until the pause ends (or Release()).
  void WaitIfPaused() {
    std::unique_lock<std::mutex> lock(mu_);
    if (released_ || std::chrono::steady_clock::now() >= until_) return;
    ++waits_;
    while (!released_ && std::chrono::steady_clock::now() < until_) cv_.wait_until(lock, until_);
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  uint64_t pauses() const {
    std::lock_guard<std::mutex> lock(mu_);
    return pauses_;
  }
  // Times a training thread actually slept because of a pause.
  uint64_t waits() const {
    std::lock_guard<std::mutex> lock(mu_);
    return waits_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::chrono::steady_clock::time_point until_{};
  uint64_t pauses_ = 0, waits_ = 0;
  bool released_ = false;
};

// Runs `fn` on a fresh thread scheduled SCHED_IDLE with nice 19, and waits for it. Falls back to
// the caller's priority (with one warning) where the kernel refuses.
Status RunAtTrainingPriority(const std::function<Status()>& fn);

}  // namespace fleet::control
