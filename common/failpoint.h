// Crash points for fault tests, in the manner of etcd's gofail and FreeBSD's fail(9): the
// environment variable FLEET_FAILPOINTS lists points that kill the process with SIGKILL when
// reached, so tests can put a real kill -9 at an exact place (between writing a checkpoint and
// committing it, say) instead of racing a timer.
//
//   FLEET_FAILPOINTS=round.collected@2,checkpoint.mid_write@3
//
// `name@N` fires when the point is reached for round N; a bare `name` fires whenever reached.
// Code can also test Armed() to inject an error instead of a kill (the audit log's
// `audit.append_fail.EVENT`, where N is the record's sequence number).
// Unset (production), Hit() is one load of a flag set at startup. Thread-safe.
#pragma once

#include <cstdint>
#include <string_view>

namespace fleet::failpoint {

// True when `name` (for `round`) is armed. Armed points log once to stderr before firing.
bool Armed(std::string_view name, uint32_t round);

// Kills the process with SIGKILL if `name` is armed for `round`.
void Hit(std::string_view name, uint32_t round);

}  // namespace fleet::failpoint
