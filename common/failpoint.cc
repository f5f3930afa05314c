#include "common/failpoint.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace fleet::failpoint {
namespace {

struct Point {
  std::string name;
  int64_t round;  // -1: any
};

const std::vector<Point>& Points() {
  static const std::vector<Point> points = [] {
    std::vector<Point> out;
    const char* env = std::getenv("FLEET_FAILPOINTS");
    if (env == nullptr) return out;
    std::string spec(env);
    size_t start = 0;
    while (start <= spec.size()) {
      size_t end = spec.find(',', start);
      if (end == std::string::npos) end = spec.size();
      std::string item = spec.substr(start, end - start);
      start = end + 1;
      if (item.empty()) continue;
      Point p{item, -1};
      size_t at = item.find('@');
      if (at != std::string::npos) {
        p.name = item.substr(0, at);
        p.round = std::strtoll(item.c_str() + at + 1, nullptr, 10);
      }
      out.push_back(p);
    }
    return out;
  }();
  return points;
}

}  // namespace

bool Armed(std::string_view name, uint32_t round) {
  for (const Point& p : Points()) {
    if (p.name == name && (p.round < 0 || p.round == static_cast<int64_t>(round))) return true;
  }
  return false;
}

void Hit(std::string_view name, uint32_t round) {
  if (Points().empty() || !Armed(name, round)) return;
  std::fprintf(stderr, "failpoint %.*s@%u: SIGKILL\n", static_cast<int>(name.size()),
               name.data(), round);
  std::fflush(stderr);
  ::kill(::getpid(), SIGKILL);
  ::pause();
}

}  // namespace fleet::failpoint
