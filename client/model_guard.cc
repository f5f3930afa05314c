#include "client/model_guard.h"

#include "crypto/model_signature.h"

namespace fleet {

Status ModelGuard::Accept(const v1::Task& task) {
  const std::string where = "job " + task.job_id() + " round " + std::to_string(task.round());
  if (task.model_signature().empty()) {
    return PermissionDenied("global model refused (" + where + "): it is not signed");
  }
  if (!crypto::VerifyModel(key_, task.job_id(), task.round(), task.parameters(),
                           task.model_signature())) {
    return PermissionDenied("global model refused (" + where +
                            "): signature does not verify (tampered, or signed for another job "
                            "or round)");
  }
  auto it = newest_round_.find(task.job_id());
  if (it != newest_round_.end() && task.round() < it->second) {
    return PermissionDenied("global model refused (" + where + "): older than round " +
                            std::to_string(it->second) + " already accepted (rollback)");
  }
  newest_round_[task.job_id()] = task.round();
  return OkStatus();
}

}  // namespace fleet
