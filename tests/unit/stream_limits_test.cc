// The two pieces PushUpdate's stream bounds are built on: CallTimer (deadlines that move, and
// that never fire after Cancel returns) and UploadSlots (ingest slots handed to waiters without
// a thread).
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "coordinator/call_timer.h"
#include "coordinator/upload_slots.h"
#include "test_util.h"

namespace fleet {
namespace {

using testing::WaitForTrue;
using Clock = CallTimer::Clock;
using std::chrono::milliseconds;

TEST(CallTimer, FiresAtItsTimeAgainWhenAskedAndNeverAfterCancel) {
  CallTimer timer;
  std::atomic<int> once{0}, again{0}, cancelled{0};
  const auto start = Clock::now();
  std::atomic<int64_t> fired_after_ms{-1};
  timer.At(start + milliseconds(50), [&] {
    fired_after_ms = std::chrono::duration_cast<milliseconds>(Clock::now() - start).count();
    ++once;
    return CallTimer::kDone;
  });
  // A deadline that moves: runs three times, 20 ms apart.
  timer.At(start, [&] { return ++again < 3 ? Clock::now() + milliseconds(20) : CallTimer::kDone; });
  CallTimer::Id c = timer.At(start + milliseconds(100), [&] {
    ++cancelled;
    return CallTimer::kDone;
  });
  timer.Cancel(c);
  ASSERT_TRUE(WaitForTrue([&] { return once == 1 && again == 3; }));
  EXPECT_GE(fired_after_ms.load(), 50);
  std::this_thread::sleep_for(milliseconds(150));
  EXPECT_EQ(once, 1);
  EXPECT_EQ(again, 3);
  EXPECT_EQ(cancelled, 0);
  EXPECT_EQ(timer.pending(), 0u);
}

TEST(CallTimer, CancelWaitsForARunningCallbackAndStopsItsRepeats) {
  CallTimer timer;
  std::atomic<bool> running{false}, finished{false};
  std::atomic<int> runs{0};
  CallTimer::Id id = timer.At(Clock::now(), [&] {
    ++runs;
    running = true;
    std::this_thread::sleep_for(milliseconds(100));  // only a test callback may block
    finished = true;
    return Clock::now();  // would run again at once
  });
  ASSERT_TRUE(WaitForTrue([&] { return running.load(); }));
  timer.Cancel(id);
  EXPECT_TRUE(finished) << "Cancel returned while the callback still ran";
  std::this_thread::sleep_for(milliseconds(50));
  EXPECT_EQ(runs, 1);
  // Cancel from inside its own callback returns at once and ends the repeats.
  std::atomic<int> self_runs{0};
  CallTimer::Id self = 0;
  std::atomic<bool> armed{false};
  self = timer.At(Clock::now() + milliseconds(10), [&] {
    while (!armed) std::this_thread::yield();
    ++self_runs;
    timer.Cancel(self);
    return Clock::now();
  });
  armed = true;
  ASSERT_TRUE(WaitForTrue([&] { return self_runs == 1; }));
  std::this_thread::sleep_for(milliseconds(50));
  EXPECT_EQ(self_runs, 1);
}

TEST(UploadSlots, WaitersGetFreedSlotsInOrderAndACancelledWaiterNever) {
  UploadSlots slots(2);
  UploadSlots::Ticket t = 0;
  EXPECT_TRUE(slots.Acquire([] { FAIL() << "not queued"; }, &t));
  EXPECT_TRUE(slots.Acquire([] { FAIL() << "not queued"; }, &t));
  std::vector<int> granted;
  UploadSlots::Ticket a = 0, b = 0, c = 0;
  EXPECT_FALSE(slots.Acquire([&] { granted.push_back(1); }, &a));
  EXPECT_FALSE(slots.Acquire([&] { granted.push_back(2); }, &b));
  EXPECT_FALSE(slots.Acquire([&] { granted.push_back(3); }, &c));
  EXPECT_EQ(slots.waiting(), 3u);
  EXPECT_TRUE(slots.CancelWait(b));  // gave up while queued: never granted
  slots.Release();
  slots.Release();
  EXPECT_EQ(granted, (std::vector<int>{1, 3}));
  EXPECT_FALSE(slots.CancelWait(a)) << "already granted: the slot is the waiter's";
  EXPECT_EQ(slots.free(), 0u);
  slots.Release();
  slots.Release();
  EXPECT_EQ(slots.free(), 2u);
}

// A waiter that ended while its grant was on the way gives the slot back from inside the grant;
// the next waiter gets it on the same thread.
TEST(UploadSlots, AGrantThatReleasesAtOncePassesTheSlotOn) {
  UploadSlots slots(1);
  UploadSlots::Ticket t = 0;
  ASSERT_TRUE(slots.Acquire([] {}, &t));
  bool second = false;
  UploadSlots::Ticket a = 0, b = 0;
  ASSERT_FALSE(slots.Acquire([&] { slots.Release(); }, &a));
  ASSERT_FALSE(slots.Acquire([&] { second = true; }, &b));
  slots.Release();
  EXPECT_TRUE(second);
  EXPECT_EQ(slots.free(), 0u);
  slots.Release();
  EXPECT_EQ(slots.free(), 1u);
}

}  // namespace
}  // namespace fleet
