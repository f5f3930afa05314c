// The ingest slots of PushUpdate: at most `n` update payloads are buffered at once, so ingest
// memory is O(n x model size) however many devices upload together. A stream that finds no free
// slot waits in FIFO order without holding a thread (it simply reads nothing more, so HTTP/2 flow
// control holds the device back); the slot is handed to its `granted` callback when another
// stream releases one.
//
// Thread-safe. `granted` runs on the releasing thread, outside the lock, and must not block.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>

namespace fleet {

class UploadSlots {
 public:
  using Ticket = uint64_t;
  explicit UploadSlots(size_t n) : free_(n) {}

  // True: the caller holds a slot now. False: it waits as *ticket; `granted` runs exactly once
  // when a slot is its, unless CancelWait(*ticket) removed it first.
  bool Acquire(std::function<void()> granted, Ticket* ticket);
  // True: the waiter was still queued and never gets a slot. False: its `granted` has run (after
  // waiting for it to return, if it was running), and the slot is the waiter's to release.
  bool CancelWait(Ticket ticket);
  void Release();

  size_t free() const;
  size_t waiting() const;

 private:
  mutable std::mutex mu_;
  std::condition_variable granted_cv_;
  size_t free_;
  Ticket next_ = 1;
  std::map<Ticket, std::function<void()>> queue_;  // FIFO: tickets increase
  std::set<Ticket> granting_;                      // whose `granted` runs now
};

}  // namespace fleet
