// Termination signals (SIGINT, SIGTERM) handled on a dedicated thread, so shutdown logic runs in
// normal code instead of a signal handler.
#pragma once

#include <functional>

namespace fleet {

// Installs a handler for SIGINT/SIGTERM and starts a detached thread that calls
// `on_signal(signo)` for each one received. The handler only writes the signal number to a
// pipe the thread reads (async-signal-safe), so it works whichever thread the kernel picks:
// also threads that libraries start before main (OpenBLAS starts its pool when it is loaded),
// which a signal mask set in main would not cover. Call once per process.
void HandleTerminationSignals(std::function<void(int)> on_signal);

}  // namespace fleet
