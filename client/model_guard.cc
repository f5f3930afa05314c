#include "client/model_guard.h"

#include "common/file_util.h"
#include "crypto/model_signature.h"

namespace fleet {

StatusOr<std::unique_ptr<AcceptedRoundsFile>> AcceptedRoundsFile::Open(std::string path) {
  std::unique_ptr<AcceptedRoundsFile> f(new AcceptedRoundsFile(std::move(path)));
  if (f->path_.empty() || !FileExists(f->path_)) return f;
  ASSIGN_OR_RETURN(std::string bytes, ReadFile(f->path_));
  v1::AcceptedRounds stored;
  if (!stored.ParseFromString(bytes)) {
    return DataLoss("the accepted-rounds file " + f->path_ +
                    " is damaged (not an AcceptedRounds record); without it this device cannot "
                    "refuse rolled-back models. Restore it, or delete it to trust the next model "
                    "of every job");
  }
  for (const auto& [job, m] : stored.jobs()) {
    f->newest_[job] = TaskMark{m.resume_epoch(), m.round()};
  }
  return f;
}

const TaskMark* AcceptedRoundsFile::Newest(const std::string& job) const {
  auto it = newest_.find(job);
  return it == newest_.end() ? nullptr : &it->second;
}

Status AcceptedRoundsFile::Record(const std::string& job, TaskMark mark) {
  const TaskMark* kept = Newest(job);
  if (kept != nullptr && !(*kept < mark)) return OkStatus();
  if (!path_.empty()) {
    v1::AcceptedRounds stored;
    for (const auto& [j, m] : newest_) {
      if (j == job) continue;
      auto& out = (*stored.mutable_jobs())[j];
      out.set_resume_epoch(m.resume_epoch);
      out.set_round(m.round);
    }
    auto& out = (*stored.mutable_jobs())[job];
    out.set_resume_epoch(mark.resume_epoch);
    out.set_round(mark.round);
    Status s = WriteFileAtomically(path_, stored.SerializeAsString(), 0600);
    if (!s.ok()) {
      return Status(s.code(), "cannot record the accepted round of job " + job + " in " + path_ +
                                  ": " + s.message());
    }
  }
  newest_[job] = mark;
  return OkStatus();
}

ModelGuard::ModelGuard(const crypto::Bytes32& model_key, AcceptedRoundsFile* accepted)
    : key_(model_key), accepted_(accepted) {
  if (accepted_ == nullptr) {
    owned_ = std::move(AcceptedRoundsFile::Open("")).value();
    accepted_ = owned_.get();
  }
}

StatusOr<v1::Task> ModelGuard::Check(const v1::SignedTask& signed_task) const {
  constexpr char kRefused[] = "global model refused: ";
  if (!signed_task.GetReflection()->GetUnknownFields(signed_task).empty()) {
    return InvalidArgument(std::string(kRefused) +
                           "the signed task carries fields other than the task and its signature");
  }
  if (signed_task.signature().empty()) {
    return PermissionDenied(std::string(kRefused) + "the task is not signed");
  }
  // The signature is checked over the bytes as received, before anything is parsed from them.
  if (!crypto::VerifyTask(key_, signed_task.task(), signed_task.signature())) {
    return PermissionDenied(std::string(kRefused) +
                            "the task's signature does not verify (tampered, truncated, extended, "
                            "or not signed by this fleet's model-signing key)");
  }
  v1::Task task;
  if (!task.ParseFromString(signed_task.task()) || task.job_id().empty()) {
    return InvalidArgument(std::string(kRefused) + "the signed bytes are not a task for a job");
  }
  const TaskMark mark{task.resume_epoch(), task.round()};
  if (const TaskMark* newest = accepted_->Newest(task.job_id());
      newest != nullptr && mark < *newest) {
    return PermissionDenied(
        "global model refused (job " + task.job_id() + " round " + std::to_string(task.round()) +
        ", coordinator epoch " + std::to_string(task.resume_epoch()) + "): older than round " +
        std::to_string(newest->round) + " (epoch " + std::to_string(newest->resume_epoch) +
        ") already accepted for this job (rollback)");
  }
  return task;
}

StatusOr<v1::Task> ModelGuard::Accept(const v1::SignedTask& signed_task) {
  ASSIGN_OR_RETURN(v1::Task task, Check(signed_task));
  RETURN_IF_ERROR(accepted_->Record(task.job_id(), TaskMark{task.resume_epoch(), task.round()}));
  return task;
}

v1::Task ClaimedIdentity(const v1::SignedTask& signed_task) {
  v1::Task parsed, claimed;
  if (!parsed.ParseFromString(signed_task.task())) return claimed;
  claimed.set_kind(parsed.kind());
  claimed.set_job_id(parsed.job_id());
  claimed.set_round(parsed.round());
  return claimed;
}

}  // namespace fleet
