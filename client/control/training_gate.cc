#include "client/control/training_gate.h"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "common/log.h"

namespace fleet::control {

Status RunAtTrainingPriority(const std::function<Status()>& fn) {
  Status result;
  std::thread t([&] {
    sched_param p{};
    p.sched_priority = 0;
    int rc = pthread_setschedparam(pthread_self(), SCHED_IDLE, &p);
    // nice applies per thread on Linux (setpriority on the thread id).
    int tid = static_cast<int>(syscall(SYS_gettid));
    if (setpriority(PRIO_PROCESS, static_cast<id_t>(tid), 19) != 0 && rc == 0) rc = errno;
    static std::once_flag warned;
    if (rc != 0) {
      std::call_once(warned, [rc] {
        FLEET_LOG(Warn) << "training runs at normal priority: " << std::strerror(rc);
      });
    }
    result = fn();
  });
  t.join();
  return result;
}

}  // namespace fleet::control
