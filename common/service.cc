#include "common/service.h"

#include <systemd/sd-daemon.h>

#include <chrono>

#include "common/log.h"

namespace fleet {

void NotifyReady(const std::string& status) {
  sd_notify(0, ("READY=1\nSTATUS=" + status).c_str());
}

void NotifyStatus(const std::string& status) { sd_notify(0, ("STATUS=" + status).c_str()); }

void NotifyStopping() { sd_notify(0, "STOPPING=1"); }

Watchdog::Watchdog(std::function<bool()> healthy) : healthy_(std::move(healthy)) {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return;
  const auto period = std::chrono::microseconds(usec / 2);
  thread_ = std::thread([this, period] {
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, period, [&] { return stop_; })) {
      if (healthy_()) {
        sd_notify(0, "WATCHDOG=1");
      } else {
        FLEET_LOG(Error) << "health probe failed: not pinging the systemd watchdog";
      }
    }
  });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace fleet
