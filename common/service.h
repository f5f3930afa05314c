// systemd integration (sd_notify via libsystemd): READY/STATUS/STOPPING notifications and a
// watchdog that pings only while a health probe passes, so a deadlocked process is restarted.
// Every call is a no-op when the process was not started by systemd with Type=notify.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace fleet {

void NotifyReady(const std::string& status);
void NotifyStatus(const std::string& status);
void NotifyStopping();

class Watchdog {
 public:
  // Starts pinging at half of WatchdogSec= if the unit set one; `healthy` runs before each ping.
  explicit Watchdog(std::function<bool()> healthy);
  ~Watchdog();  // stops the thread
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  std::function<bool()> healthy_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace fleet
