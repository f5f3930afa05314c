#include "coordinator/upload_slots.h"

namespace fleet {

bool UploadSlots::Acquire(std::function<void()> granted, Ticket* ticket) {
  std::lock_guard<std::mutex> lock(mu_);
  if (free_ > 0 && queue_.empty()) {
    --free_;
    *ticket = 0;
    return true;
  }
  *ticket = next_++;
  queue_.emplace(*ticket, std::move(granted));
  return false;
}

bool UploadSlots::CancelWait(Ticket ticket) {
  std::unique_lock<std::mutex> lock(mu_);
  if (queue_.erase(ticket) > 0) return true;
  granted_cv_.wait(lock, [&] { return granting_.count(ticket) == 0; });
  return false;
}

void UploadSlots::Release() {
  std::unique_lock<std::mutex> lock(mu_);
  if (queue_.empty()) {
    ++free_;
    return;
  }
  // The slot passes straight to the longest waiter.
  auto first = queue_.begin();
  const Ticket t = first->first;
  std::function<void()> granted = std::move(first->second);
  queue_.erase(first);
  granting_.insert(t);  // in the same critical section: CancelWait(t) sees one or the other
  lock.unlock();
  granted();  // may Release() again on this thread (a waiter that had ended meanwhile)
  lock.lock();
  granting_.erase(t);
  granted_cv_.notify_all();
}

size_t UploadSlots::free() const {
  std::lock_guard<std::mutex> lock(mu_);
  return free_;
}

size_t UploadSlots::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

}  // namespace fleet
