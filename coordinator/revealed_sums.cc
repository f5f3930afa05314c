// JobRunner's record of revealed secure sums (docs/security.md, "Secure aggregation"): the
// difference of two sums over nearly the same inputs exposes single devices' updates, so once a
// sum over a model version may be known to the coordinator, no further sum over that version
// includes any of its devices. Retries over the same model run with a disjoint cohort; the job
// waits (PENDING) while too few devices remain. Plain jobs never record anything here.
#include <algorithm>

#include "common/clock.h"
#include "common/log.h"
#include "coordinator/job_runner.h"

namespace fleet {

RevealedExclusions JobRunner::RevealedOverCurrentModel() const {
  RevealedExclusions out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const v1::RevealedSum& sum : job_.revealed()) {
      if (sum.model_blake2b() != round_model_hash_) continue;
      const std::string name =
          "round " + std::to_string(sum.round()) + " attempt " + std::to_string(sum.attempt());
      for (const std::string& device : sum.devices()) out.emplace(device, name);  // first wins
    }
  }
  if (round_model_hash_.empty()) return out;
  // This job's records over the model from the store's table, which keeps them for good (the
  // job row keeps only those a restart could fall back to). Other jobs' sums over the same
  // model are in the table too but not applied: see docs/security.md, "What is not protected".
  StatusOr<std::vector<v1::RevealedSum>> fleet = store_->LoadRevealedSums(round_model_hash_);
  if (!fleet.ok()) {
    // Fail closed: without the table nobody may join a sum over this model.
    FLEET_LOG(Error) << "job " << job_.id()
                     << ": cannot read revealed sums: " << fleet.status().message()
                     << "; no device is eligible until it can";
    for (const v1::DeviceStatus& d : registry_->List()) {
      out.emplace(d.id(), "(revealed sums unreadable: " + fleet.status().message() + ")");
    }
    return out;
  }
  for (const v1::RevealedSum& sum : *fleet) {
    if (sum.job_id() != job_.id()) continue;
    const std::string name =
        "round " + std::to_string(sum.round()) + " attempt " + std::to_string(sum.attempt());
    for (const std::string& device : sum.devices()) out.emplace(device, name);
  }
  return out;
}

Status JobRunner::RecordRevealed(uint32_t round, std::vector<std::string> survivors) {
  v1::RevealedSum sum;
  sum.set_round(round);
  sum.set_attempt(attempt_);
  sum.set_model_blake2b(round_model_hash_);
  for (std::string& id : survivors) sum.add_devices(std::move(id));
  sum.set_unix_ms(UnixMillis());
  // The fleet-wide record first (kept for good: the model may come back in another job), then
  // the job row with it, each fsynced (synchronous=FULL) before anything is unmasked; the
  // in-memory job changes only once both hold. A fleet row without the job row (the second
  // write failed) only keeps its devices out of later sums over this model.
  v1::RevealedSum fleet = sum;
  fleet.set_job_id(job_.id());
  RETURN_IF_ERROR(store_->SaveRevealedSum(fleet));
  v1::JobStatus next = Snapshot();
  *next.add_revealed() = sum;
  next.set_updated_unix_ms(sum.unix_ms());
  RETURN_IF_ERROR(store_->SaveJob(next));
  {
    std::lock_guard<std::mutex> lock(mu_);
    *job_.add_revealed() = sum;
    job_.set_updated_unix_ms(sum.unix_ms());
  }
  FLEET_LOG(Info) << "job " << job_.id() << " round " << round << " attempt " << attempt_
                  << ": unmasking the sum of " << sum.devices_size() << " devices over model "
                  << round_model_hash_.substr(0, 12) << " (recorded: no further sum over this "
                  << "model may include them)";
  return OkStatus();
}

void JobRunner::RecordFailureAfterUnmask(uint32_t round, const std::string& why) {
  int survivors = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    v1::RevealedSum* sum = RevealedLocked(round, attempt_);
    if (sum == nullptr || !sum->failure().empty()) return;
    sum->set_failure(why);
    survivors = sum->devices_size();
    AddAbortLocked(round, why, /*after_unmask=*/true);
  }
  Persist();
  FLEET_LOG(Warn) << "job " << job_.id() << " round " << round << " attempt " << attempt_
                  << " failed after unmasking: " << why << "; this is final for its " << survivors
                  << " devices: they take no further part in sums over model "
                  << round_model_hash_.substr(0, 12);
  if (options_.audit != nullptr) {
    (void)options_.audit->Append("round_failed_after_unmask", "coordinator",
                                 {{"job_id", job_.id()},
                                  {"round", round},
                                  {"attempt", attempt_},
                                  {"survivors", survivors},
                                  {"reason", why}});
  }
  changed_();
}

void JobRunner::MarkRevealsOfReplayedRounds() {
  for (v1::RevealedSum& sum : *job_.mutable_revealed()) {
    if (sum.round() < next_round_ || !sum.failure().empty()) continue;
    sum.set_failure("the coordinator restarted before round " + std::to_string(sum.round()) +
                    " was kept (not committed, or its checkpoint was lost); the round runs "
                    "again without these devices");
    v1::RoundAbort* a = job_.add_aborts();
    a->set_round(sum.round());
    a->set_attempt(sum.attempt());
    a->set_reason(sum.failure());
    a->set_unix_ms(UnixMillis());
    a->set_after_unmask(true);
    FLEET_LOG(Warn) << "job " << job_.id() << " round " << sum.round() << " attempt "
                    << sum.attempt() << " had unmasked the sum of " << sum.devices_size()
                    << " devices when the coordinator stopped; they sit out the replayed round";
    if (options_.audit != nullptr) {
      (void)options_.audit->Append("round_failed_after_unmask", "coordinator",
                                   {{"job_id", job_.id()},
                                    {"round", sum.round()},
                                    {"attempt", sum.attempt()},
                                    {"survivors", sum.devices_size()},
                                    {"reason", "coordinator restarted before the round was kept"}});
    }
  }
  if (job_.aborts_size() > 100) job_.mutable_aborts()->DeleteSubrange(0, job_.aborts_size() - 100);
}

v1::RevealedSum* JobRunner::RevealedLocked(uint32_t round, uint32_t attempt) {
  for (v1::RevealedSum& sum : *job_.mutable_revealed()) {
    if (sum.round() == round && sum.attempt() == attempt) return &sum;
  }
  return nullptr;
}

void JobRunner::AddAbortLocked(uint32_t round, const std::string& reason, bool after_unmask) {
  v1::RoundAbort* a = job_.add_aborts();
  a->set_round(round);
  a->set_attempt(attempt_);
  a->set_reason(reason);
  a->set_unix_ms(UnixMillis());
  a->set_after_unmask(after_unmask);
  if (job_.aborts_size() > 100) job_.mutable_aborts()->DeleteSubrange(0, 1);
}

uint32_t JobRunner::NextAttempt(uint32_t round, uint32_t failures) const {
  uint32_t attempt = failures + 1;
  std::lock_guard<std::mutex> lock(mu_);
  for (const v1::RevealedSum& sum : job_.revealed()) {
    if (sum.round() == round) attempt = std::max(attempt, sum.attempt() + 1);
  }
  return attempt;
}

}  // namespace fleet
