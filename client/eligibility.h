// What the device tells the coordinator about its readiness to train (v1::Eligibility), read
// from the kernel each heartbeat: power from /sys/class/power_supply (mains "online", battery
// "capacity" and "status"), CPU load from /proc/loadavg, free memory from /proc/meminfo.
// A device with no battery counts as on power. Thread-compatible; cheap (a few small reads).
#pragma once

#include <string>

#include "proto/fleet.pb.h"

namespace fleet {

struct EligibilitySources {
  std::string power_supply_dir = "/sys/class/power_supply";
  std::string loadavg = "/proc/loadavg";
  std::string meminfo = "/proc/meminfo";
  double idle_max_load = 0.7;  // idle: 1-minute load per core at or below this
};

v1::Eligibility ReadEligibility(const EligibilitySources& sources);

}  // namespace fleet
