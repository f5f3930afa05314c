#include "client/eligibility.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace fleet {
namespace {

std::string FirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace

v1::Eligibility ReadEligibility(const EligibilitySources& src) {
  v1::Eligibility e;
  bool has_battery = false, mains_online = false, charging = false;
  uint32_t capacity = 100;
  if (DIR* d = ::opendir(src.power_supply_dir.c_str())) {
    while (dirent* ent = ::readdir(d)) {
      const std::string name = ent->d_name;
      if (name == "." || name == "..") continue;
      const std::string dir = src.power_supply_dir + "/" + name;
      const std::string type = FirstLine(dir + "/type");
      if (type == "Mains" || type == "USB") {
        mains_online = mains_online || FirstLine(dir + "/online") == "1";
      } else if (type == "Battery") {
        has_battery = true;
        const std::string cap = FirstLine(dir + "/capacity");
        if (!cap.empty()) {
          capacity = std::min<uint32_t>(
              capacity, static_cast<uint32_t>(std::min(100UL, std::strtoul(cap.c_str(), nullptr, 10))));
        }
        const std::string status = FirstLine(dir + "/status");
        charging = charging || status == "Charging" || status == "Full";
      }
    }
    ::closedir(d);
  }
  e.set_on_power(!has_battery || mains_online || charging);
  e.set_battery_percent(has_battery ? capacity : 100);

  double load1 = 0;
  std::istringstream(FirstLine(src.loadavg)) >> load1;
  const long cores = std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN));
  e.set_cpu_load(static_cast<float>(load1 / static_cast<double>(cores)));
  e.set_idle(e.cpu_load() <= src.idle_max_load);

  std::ifstream mem(src.meminfo);
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (mem >> key >> kb) {
    std::getline(mem, unit);
    if (key == "MemAvailable:") {
      e.set_free_memory_mb(kb / 1024);
      break;
    }
  }
  return e;
}

}  // namespace fleet
