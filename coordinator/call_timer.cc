#include "coordinator/call_timer.h"

namespace fleet {

CallTimer::CallTimer() : thread_([this] { Loop(); }) {}

CallTimer::~CallTimer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    callbacks_.clear();
    due_.clear();
  }
  cv_.notify_all();
  thread_.join();
}

CallTimer::Id CallTimer::At(Clock::time_point when, Callback fire) {
  std::lock_guard<std::mutex> lock(mu_);
  const Id id = next_++;
  callbacks_.emplace(id, std::move(fire));
  const bool earliest = due_.empty() || when < due_.begin()->first;
  due_.emplace(when, id);
  if (earliest) cv_.notify_all();
  return id;
}

void CallTimer::Cancel(Id id) {
  if (id == 0) return;
  std::unique_lock<std::mutex> lock(mu_);
  if (callbacks_.erase(id) > 0) return;  // its entry in due_ is skipped when it comes up
  if (running_ != id) return;            // finished (or unknown)
  running_cancelled_ = true;
  if (std::this_thread::get_id() == thread_.get_id()) return;  // called by that very callback
  done_cv_.wait(lock, [&] { return running_ != id; });
}

size_t CallTimer::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return callbacks_.size();
}

void CallTimer::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (due_.empty()) {
      cv_.wait(lock);
      continue;
    }
    auto first = due_.begin();
    if (Clock::now() < first->first) {
      cv_.wait_until(lock, first->first);
      continue;
    }
    const Id id = first->second;
    due_.erase(first);
    auto it = callbacks_.find(id);
    if (it == callbacks_.end()) continue;  // cancelled
    Callback fire = std::move(it->second);
    callbacks_.erase(it);
    running_ = id;
    running_cancelled_ = false;
    lock.unlock();
    const Clock::time_point next = fire();
    lock.lock();
    if (next != kDone && !running_cancelled_ && !stop_) {
      callbacks_.emplace(id, std::move(fire));
      due_.emplace(next, id);
    }
    running_ = 0;
    done_cv_.notify_all();
  }
}

}  // namespace fleet
