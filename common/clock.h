// Wall-clock helpers. Durations and deadlines use std::chrono::steady_clock directly; this is
// only for timestamps shown to people and stored in the job database.
#pragma once

#include <chrono>
#include <cstdint>

namespace fleet {

inline int64_t UnixMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace fleet
