// Termination signals (SIGINT, SIGTERM) handled on a dedicated thread, so shutdown logic runs in
// normal code instead of a signal handler. Call before starting any other thread.
#pragma once

#include <functional>

namespace fleet {

// Blocks SIGINT/SIGTERM in the calling thread (and the threads it creates later) and starts a
// detached thread that calls `on_signal(signo)` for each one received.
void HandleTerminationSignals(std::function<void(int)> on_signal);

}  // namespace fleet
