// A counting semaphore (C++17 has none): bounds how many callers hold a scarce resource at once.
// Thread-safe.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <mutex>

namespace fleet {

class Semaphore {
 public:
  explicit Semaphore(size_t permits) : permits_(permits) {}
  void Acquire() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return permits_ > 0; });
    --permits_;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    ++permits_;
    cv_.notify_one();
  }

  // Holds one permit for its scope.
  class Permit {
   public:
    explicit Permit(Semaphore* s) : s_(s) { s_->Acquire(); }
    ~Permit() { s_->Release(); }
    Permit(const Permit&) = delete;
    Permit& operator=(const Permit&) = delete;

   private:
    Semaphore* s_;
  };

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  size_t permits_;
};

}  // namespace fleet
