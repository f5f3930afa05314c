// DeviceRegistry long polls without threads: a parked poll completes exactly once, with the task
// queued for its device, at its deadline, or on revocation/shutdown.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "coordinator/device_registry.h"

namespace fleet {
namespace {

using namespace std::chrono_literals;

v1::JoinRequest JoinOf(const std::string& id) {
  v1::JoinRequest j;
  j.set_device_id(id);
  auto* d = j.add_datasets();
  d->set_name("har");
  d->set_train_examples(10);
  return j;
}

// Collects completions of parked polls.
struct Results {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> got;  // task bytes, or "<none>"
  DeviceRegistry::TaskCallback Callback() {
    return [this](DeviceRegistry::TaskBytes t) {
      std::lock_guard<std::mutex> lock(mu);
      got.push_back(t ? *t : "<none>");
      cv.notify_all();
    };
  }
  bool WaitFor(size_t n, std::chrono::milliseconds timeout = 5s) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, timeout, [&] { return got.size() >= n; });
  }
};

TEST(DeviceRegistry, ParkedPollGetsTheTaskOrTimesOut) {
  DeviceRegistry reg(2s);
  Results r;
  EXPECT_FALSE(reg.Park("nobody", 10ms, r.Callback()));  // never joined
  reg.Join(JoinOf("a"));
  reg.Join(JoinOf("b"));
  ASSERT_TRUE(reg.Park("a", 10s, r.Callback()));
  ASSERT_TRUE(reg.Park("b", 50ms, r.Callback()));
  EXPECT_EQ(reg.parked(), 2u);
  ASSERT_TRUE(r.WaitFor(1));  // b's deadline
  EXPECT_EQ(r.got[0], "<none>");
  EXPECT_TRUE(reg.IsOnline("a"));  // parked: online
  auto task = std::make_shared<const std::string>("task-bytes");
  ASSERT_TRUE(reg.Reserve("a", "job-1", task));
  ASSERT_TRUE(r.WaitFor(2));
  EXPECT_EQ(r.got[1], "task-bytes");
  EXPECT_EQ(reg.parked(), 0u);
  EXPECT_FALSE(reg.Reserve("a", "job-2", task));  // held by job-1

  // A task queued before the poll is handed over at once.
  ASSERT_TRUE(reg.Reserve("b", "job-1", task));
  ASSERT_TRUE(reg.Park("b", 10s, r.Callback()));
  ASSERT_TRUE(r.WaitFor(3));
  EXPECT_EQ(r.got[2], "task-bytes");

  // Revocation and shutdown complete parked polls with no task; later polls return at once.
  ASSERT_TRUE(reg.Park("a", 10s, r.Callback()));
  reg.Revoke("a");
  ASSERT_TRUE(r.WaitFor(4));
  EXPECT_EQ(r.got[3], "<none>");
  ASSERT_TRUE(reg.Park("b", 10s, r.Callback()));
  reg.WakeAll();
  ASSERT_TRUE(r.WaitFor(5));
  ASSERT_TRUE(reg.Park("b", 10s, r.Callback()));
  ASSERT_TRUE(r.WaitFor(6, 100ms));
}

// Thousands of parked polls with staggered deadlines all complete, in deadline order, from the
// one timer thread.
TEST(DeviceRegistry, ManyParkedPollsExpireOnTime) {
  DeviceRegistry reg(2s);
  Results r;
  const int n = 5000;
  for (int i = 0; i < n; ++i) reg.Join(JoinOf("d" + std::to_string(i)));
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(reg.Park("d" + std::to_string(i), std::chrono::milliseconds(1 + i % 100),
                         r.Callback()));
  }
  ASSERT_TRUE(r.WaitFor(n));
  EXPECT_EQ(reg.parked(), 0u);
}

}  // namespace
}  // namespace fleet
