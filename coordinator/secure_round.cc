// JobRunner's secure-aggregation path: drives the SecAgg+ stages of a round (aggregation/
// SecAggServer) with deadlines and liveness, and serves the devices' SecAgg RPCs.
#include <sodium.h>

#include <algorithm>
#include <utility>

#include "common/clock.h"
#include "common/failpoint.h"
#include "common/job_spec.h"
#include "common/log.h"
#include "common/utf8.h"
#include "coordinator/job_runner.h"

namespace fleet {

using Stage = SecAggServer::Stage;

bool JobRunner::RunSecureStages(uint32_t round, v1::RoundSummary* summary, std::string* why) {
  const v1::JobSpec& spec = job_.spec();
  const auto& sa = spec.secure_aggregation();
  SecAggServer::Options opt;
  opt.job_id = job_.id();
  opt.round = round;
  opt.vector_length = layout_.total + kSecAggExtraElements;
  opt.modulus_bits = quant_.modulus_bits;
  opt.min_survivors = spec.min_clients();
  opt.threat = ThreatModelOf(sa);
  randombytes_buf(opt.graph_seed.data(), opt.graph_seed.size());
  // Each device's key and the certificate that certifies it, from its Join: neighbours check the
  // certificate before they use the key.
  std::map<std::string, SecAggServer::Device> devices;
  {
    std::lock_guard<std::mutex> lock(mu_);
    opt.attempt_nonce = round_.attempt_nonce;
    for (const auto& id : round_.selected) {
      DeviceRegistry::SecAggIdentity who = registry_->SecAggIdentityOf(id);
      crypto::FromString(who.signing_key, &devices[id].signing_key);
      devices[id].certificate = std::move(who.certificate);
    }
  }
  StatusOr<std::unique_ptr<SecAggServer>> created = SecAggServer::Create(opt, devices);
  Replies replies;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (created.ok()) {
      secagg_ = std::move(created).value();
    } else {
      secagg_.reset();
    }
    round_.secagg_started = true;
    for (auto& [req, reply] : std::exchange(early_, {})) {
      if (auto r = SecAggStepLocked(req, &reply)) {
        replies.emplace_back(std::move(reply), std::move(*r));
      }
    }
  }
  Send(&replies);

  const auto stage_timeout = std::chrono::seconds(sa.stage_timeout_s());
  std::shared_ptr<SecAggServer> server;
  {
    std::unique_lock<std::mutex> lock(mu_);
    server = secagg_;
    while (server && server->stage() < Stage::kDone) {
      const Stage stage = server->stage();
      const auto opened = std::chrono::steady_clock::now();
      const auto deadline = opened +
          (stage == Stage::kMaskedInput ? std::chrono::seconds(spec.round_deadline_s())
                                        : stage_timeout);
      if (stage == Stage::kMaskedInput) round_.uploads_until = deadline;
      // Wait while some device that can still answer has not: online and not declined.
      while (!stop_ && std::chrono::steady_clock::now() < deadline) {
        bool waiting = false;
        for (const auto& id : server->Pending()) {
          waiting |= round_.answered.count(id) == 0 && registry_->IsOnline(id);
        }
        if (!waiting) break;
        cv_.wait_for(lock, options_.wait_poll);
      }
      if (stop_) {
        server->Abort("the job was stopped");
        break;
      }
      for (const auto& id : server->Pending()) {
        FLEET_LOG(Warn) << "job " << job_.id() << " round " << round << ": device " << id
                        << " dropped out in " << SecAggServer::StageName(stage);
      }
      server->CloseStage();
      if (stage == Stage::kConsistency && server->stage() == Stage::kUnmask) {
        // The unmask requests are the parked ConsistencyCheck calls' answers, sent just below:
        // from then on the coordinator may learn the sum, so it is recorded first. No one else
        // sends those answers, so the lock can be dropped for the write.
        std::vector<std::string> survivors = server->SurvivorIds();
        lock.unlock();
        Status recorded = RecordRevealed(round, std::move(survivors));
        lock.lock();
        if (!recorded.ok()) {
          FLEET_LOG(Error) << "job " << job_.id() << " round " << round
                           << ": cannot record the sum before unmasking: " << recorded.message();
          server->Abort("the coordinator could not record the sum durably before unmasking");
        }
      }
      replies = TakeAnsweredLocked();
      lock.unlock();
      Send(&replies);
      lock.lock();
      FLEET_LOG(Debug) << "job " << job_.id() << " round " << round << ": "
                       << SecAggServer::StageName(stage) << " closed after "
                       << std::chrono::duration<double, std::milli>(
                              std::chrono::steady_clock::now() - opened)
                              .count()
                       << " ms";
    }
    round_.phase = Phase::kIdle;
    for (const auto& id : round_.selected) registry_->Release(id, job_.id());
    replies = TakeAnsweredLocked();
    cv_.notify_all();
  }
  Send(&replies);

  summary->set_secure(true);
  summary->set_rejected(round_.rejected);
  if (!server) {
    *why = "secure aggregation could not start: " + created.status().message();
    return false;
  }
  summary->set_secagg_neighbours(server->params().k);
  summary->set_secagg_threshold(server->params().t);
  summary->set_participants(static_cast<uint32_t>(server->survivors()));
  FLEET_LOG(Info) << "job " << job_.id() << " round " << round << ": secure aggregation "
                  << server->Progress();
  if (server->stage() != Stage::kDone) {
    bool revealed;
    {
      std::lock_guard<std::mutex> lock(mu_);
      revealed = RevealedLocked(round, attempt_) != nullptr;
      // After the Unmask stage opened, Run() records the failure (RecordFailureAfterUnmask).
      if (!revealed) AddAbortLocked(round, server->abort_reason(), /*after_unmask=*/false);
    }
    if (revealed) {
      *why =
          "secure aggregation aborted " + server->abort_reason() + " after its Unmask stage opened";
      return false;
    }
    *why = "secure aggregation aborted " + server->abort_reason() + "; nothing was unmasked";
    Persist();
    changed_();
    return false;
  }
  failpoint::Hit("round.collected", round);
  StatusOr<DequantizedSum> deq = DequantizeSum(server->sum(), quant_);
  if (!deq.ok()) {
    *why = "secure aggregate unusable: " + deq.status().message();
    return false;
  }
  std::vector<float> next = global_;
  server_optimizer_.Apply(&next, deq->mean_delta);
  SetGlobal(std::move(next));
  summary->set_train_loss(deq->train_loss);
  summary->set_val_accuracy(deq->val_accuracy);
  return true;
}

// Declines (an error header) are taken at any stage of the round; a masked input only while the
// masked-input stage is open and still waits for this device.
Status JobRunner::AdmitMaskedUploadLocked(const v1::UpdateHeader& header) const {
  const std::string& device = header.device_id();
  if (round_.phase != Phase::kTrain || header.round() != round_.round || !secagg_ ||
      secagg_->round() != header.round()) {
    return FailedPrecondition("job " + job_.id() + " is not collecting updates for round " +
                              std::to_string(header.round()));
  }
  if (round_.selected.count(device) == 0) {
    return FailedPrecondition("device " + device + " was not selected for round " +
                              std::to_string(header.round()));
  }
  if (!header.error().empty()) return OkStatus();
  if (!header.masked()) {
    return InvalidArgument("job " + job_.id() +
                           " uses secure aggregation: plaintext updates are refused");
  }
  if (secagg_->stage() != Stage::kMaskedInput) {
    return FailedPrecondition("secure aggregation round " + std::to_string(header.round()) +
                              " is not collecting masked inputs (it is in " +
                              SecAggServer::StageName(secagg_->stage()) + ")");
  }
  const std::vector<std::string> pending = secagg_->Pending();
  if (std::find(pending.begin(), pending.end(), device) == pending.end()) {
    return Status(StatusCode::kAlreadyExists,
                  "device " + device + " already sent its masked input for round " +
                      std::to_string(header.round()) + " (or dropped out before it)");
  }
  return OkStatus();
}

Status JobRunner::OnMaskedUpdate(const v1::UpdateHeader& header, std::string_view payload) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string& device = header.device_id();
  if (round_.phase != Phase::kTrain || header.round() != round_.round) {
    return FailedPrecondition("job " + job_.id() + " is not collecting updates for round " +
                              std::to_string(header.round()));
  }
  if (round_.selected.count(device) == 0) {
    return FailedPrecondition("device " + device + " was not selected for round " +
                              std::to_string(header.round()));
  }
  // A device that declines (cannot train, or refuses this model) usually answers at once, maybe
  // before the state machine is installed: the round stops waiting for it either way.
  if (!header.error().empty()) {
    if (round_.answered.insert(device).second) round_.rejected++;
    cv_.notify_all();
    FLEET_LOG(Warn) << "job " << job_.id() << " round " << round_.round << ": device " << device
                    << " declined: " << Utf8Prefix(header.error(), 300);
    return OkStatus();
  }
  if (!secagg_ || secagg_->round() != header.round()) {
    return FailedPrecondition("job " + job_.id() + " is not collecting updates for round " +
                              std::to_string(header.round()));
  }
  if (!header.masked()) {
    return InvalidArgument("job " + job_.id() +
                           " uses secure aggregation: plaintext updates are refused");
  }
  Status s = secagg_->MaskedInput(device, payload);
  if (!s.ok()) {
    if (s.code() == StatusCode::kInvalidArgument) round_.rejected++;
    FLEET_LOG(Warn) << "job " << job_.id() << " round " << round_.round
                    << ": rejected masked input from " << device << ": " << s.message();
    return s;
  }
  cv_.notify_all();
  return OkStatus();
}

void JobRunner::OnSecAgg(const v1::SecAggRequest& req, SecAggReply reply) {
  std::optional<StatusOr<v1::SecAggResponse>> now;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_ && secure() && round_.phase == Phase::kTrain && req.round() == round_.round &&
        !round_.secagg_started) {
      // A device can answer its task before the runner has installed the round's state machine.
      early_.emplace_back(req, std::move(reply));
      return;
    }
    now = SecAggStepLocked(req, &reply);
  }
  if (now) reply(std::move(*now));
}

std::optional<StatusOr<v1::SecAggResponse>> JobRunner::SecAggStepLocked(
    const v1::SecAggRequest& req, SecAggReply* reply) {
  const std::string& device = req.device_id();
  std::shared_ptr<SecAggServer> server = secagg_;
  if (!secure() || !server || round_.phase != Phase::kTrain || req.round() != round_.round ||
      server->round() != req.round()) {
    return StatusOr<v1::SecAggResponse>(
        FailedPrecondition("job " + job_.id() + " is not running secure aggregation round " +
                           std::to_string(req.round())));
  }
  if (round_.selected.count(device) == 0) {
    return StatusOr<v1::SecAggResponse>(FailedPrecondition(
        "device " + device + " was not selected for round " + std::to_string(req.round())));
  }
  Stage stage;
  Status s;
  switch (req.step_case()) {
    case v1::SecAggRequest::kAdvertise:
      stage = Stage::kAdvertise;
      s = server->Advertise(device, req.advertise());
      break;
    case v1::SecAggRequest::kShareKeys:
      stage = Stage::kShareKeys;
      s = server->ShareKeys(device, req.share_keys());
      break;
    case v1::SecAggRequest::kAwaitSurvivors:
      stage = Stage::kMaskedInput;  // the masked input itself came through PushUpdate
      break;
    case v1::SecAggRequest::kConsistency:
      stage = Stage::kConsistency;
      s = server->Consistency(device, req.consistency());
      break;
    case v1::SecAggRequest::kUnmask:
      stage = Stage::kUnmask;
      s = server->Unmask(device, req.unmask());
      break;
    default:
      return StatusOr<v1::SecAggResponse>(InvalidArgument("SecAgg request carries no step"));
  }
  if (!s.ok()) {
    FLEET_LOG(Warn) << "job " << job_.id() << " round " << req.round() << ": rejected "
                    << SecAggServer::StageName(stage) << " message from " << device << ": "
                    << s.message();
    return StatusOr<v1::SecAggResponse>(s);
  }
  cv_.notify_all();
  if (server->stage() > stage) return server->ResponseFor(device, stage);
  // Only await_survivors can get here twice (the state machine refuses every other repeat).
  if (parked_.count(device) > 0) {
    return StatusOr<v1::SecAggResponse>(Status(
        StatusCode::kAlreadyExists,
        "device " + device + " already waits for " + SecAggServer::StageName(stage) + " to close"));
  }
  parked_.emplace(device, ParkedStep{stage, std::move(*reply)});
  return std::nullopt;
}

JobRunner::Replies JobRunner::TakeAnsweredLocked() {
  Replies out;
  for (auto it = parked_.begin(); it != parked_.end();) {
    const std::string& device = it->first;
    ParkedStep& p = it->second;
    if (secagg_ && secagg_->stage() > p.stage) {
      out.emplace_back(std::move(p.reply), secagg_->ResponseFor(device, p.stage));
    } else if (round_.phase != Phase::kTrain) {
      v1::SecAggResponse r;
      r.set_abort_reason("the round ended before this stage closed");
      out.emplace_back(std::move(p.reply), std::move(r));
    } else {
      ++it;
      continue;
    }
    it = parked_.erase(it);
  }
  if (round_.phase != Phase::kTrain) {
    for (auto& [req, reply] : std::exchange(early_, {})) {
      out.emplace_back(std::move(reply),
                       FailedPrecondition("job " + job_.id() + " round " +
                                          std::to_string(req.round()) + " ended"));
    }
  }
  return out;
}

void JobRunner::Send(Replies* replies) {
  for (auto& [reply, answer] : *replies) reply(std::move(answer));
  replies->clear();
}

}  // namespace fleet
