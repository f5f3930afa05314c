// HandleTerminationSignals must catch SIGTERM whichever thread the kernel delivers it to,
// including threads that were started before it was called (as OpenBLAS starts its pool when
// the library is loaded, before main).
#include "common/signals.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

namespace {

// In a child: threads that block nothing, then the handler, then SIGTERM to the process.
// Returns the child's wait status.
int RunChild() {
  pid_t pid = fork();
  if (pid == 0) {
    std::vector<std::thread> early;
    for (int i = 0; i < 8; ++i) {
      early.emplace_back([] { std::this_thread::sleep_for(std::chrono::seconds(30)); });
    }
    fleet::HandleTerminationSignals([](int signo) { _exit(signo == SIGTERM ? 42 : 43); });
    kill(getpid(), SIGTERM);
    std::this_thread::sleep_for(std::chrono::seconds(10));
    _exit(44);  // the signal was lost
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

TEST(Signals, SigtermReachesTheCallbackEvenViaThreadsStartedBeforeTheHandler) {
  for (int i = 0; i < 20; ++i) {
    const int status = RunChild();
    ASSERT_FALSE(WIFSIGNALED(status))
        << "child " << i << " was killed by signal " << WTERMSIG(status)
        << " instead of handling it";
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 42) << "child " << i;
  }
}

}  // namespace
