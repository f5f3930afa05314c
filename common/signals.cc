#include "common/signals.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

namespace fleet {
namespace {

int g_signal_pipe[2] = {-1, -1};

void OnSignal(int signo) {
  const int saved = errno;
  const unsigned char b = static_cast<unsigned char>(signo);
  // A full pipe (hundreds of pending signals) drops this one: the earlier ones are enough.
  if (::write(g_signal_pipe[1], &b, 1) < 0) {
  }
  errno = saved;
}

}  // namespace

void HandleTerminationSignals(std::function<void(int)> on_signal) {
  if (::pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    std::perror("fleetfl: cannot create the signal pipe");
    std::abort();
  }
  // The reading end blocks: only the writing end (used by the handler) must never block.
  ::fcntl(g_signal_pipe[0], F_SETFL, ::fcntl(g_signal_pipe[0], F_GETFL) & ~O_NONBLOCK);
  std::thread([fd = g_signal_pipe[0], on_signal = std::move(on_signal)] {
    for (;;) {
      unsigned char b = 0;
      const ssize_t n = ::read(fd, &b, 1);
      if (n == 1) {
        on_signal(b);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        return;
      }
    }
  }).detach();
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

}  // namespace fleet
