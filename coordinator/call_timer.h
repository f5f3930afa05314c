// Deadlines of streaming calls (PushUpdate's idle and total bounds, WatchJob's): one thread runs
// short callbacks at given times. gRPC's server cannot time out a stream that waits for the
// peer by itself, so these callbacks end such streams (Finish with DEADLINE_EXCEEDED, or
// TryCancel for a sync call blocked in Write).
//
// Thread-safe. A callback runs on the timer thread, without the timer's lock, and must not
// block; it returns when it wants to run again (kDone: never), so one id covers a deadline that
// keeps moving (an idle bound pushed back by every chunk). Cancel(id) returns only once that
// callback is not running and will not run again, so a callback may use an object its owner
// destroys right after Cancel (called from inside the callback itself, Cancel returns at once
// and the callback does not run again).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

namespace fleet {

class CallTimer {
 public:
  using Clock = std::chrono::steady_clock;
  using Id = uint64_t;
  using Callback = std::function<Clock::time_point()>;
  static constexpr Clock::time_point kDone{};

  CallTimer();
  ~CallTimer();  // drops what is pending (nothing runs any more) and joins the thread
  CallTimer(const CallTimer&) = delete;
  CallTimer& operator=(const CallTimer&) = delete;

  // Runs `fire` at `when` (at once if it is past), and again at the time it returns, until it
  // returns kDone or is cancelled. Ids are never 0.
  Id At(Clock::time_point when, Callback fire);
  // See the header comment. Unknown or finished ids are fine.
  void Cancel(Id id);
  size_t pending() const;

 private:
  void Loop();

  mutable std::mutex mu_;
  std::condition_variable cv_;       // new earliest deadline, or stop
  std::condition_variable done_cv_;  // a callback finished running
  std::map<Id, Callback> callbacks_;
  std::multimap<Clock::time_point, Id> due_;
  Id next_ = 1;
  Id running_ = 0;                  // the callback executing now (0: none)
  bool running_cancelled_ = false;  // Cancel(running_) came while it ran: do not run it again
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace fleet
