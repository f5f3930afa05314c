#include "coordinator/job_runner.h"

#include <sodium.h>

#include <cmath>

#include "common/clock.h"
#include "common/failpoint.h"
#include "common/file_util.h"
#include "common/job_spec.h"
#include "common/log.h"
#include "common/tensor_codec.h"
#include "common/utf8.h"
#include "coordinator/task_envelope.h"

namespace fleet {
namespace {

bool Terminal(v1::JobStatus::State s) {
  return s == v1::JobStatus::SUCCEEDED || s == v1::JobStatus::FAILED ||
         s == v1::JobStatus::STOPPED;
}

}  // namespace

StatusOr<std::string> InitialModelHash(const v1::JobSpec& spec) {
  ASSIGN_OR_RETURN(ModelLayout layout, LayoutFor(spec.model()));
  std::vector<float> params = InitialParameters(layout, spec.seed());
  return Blake2bHex(EncodeParameters(layout, params.data()));
}

StatusOr<std::unique_ptr<JobRunner>> JobRunner::Create(v1::JobStatus job,
                                                       DeviceRegistry* registry, JobStore* store,
                                                       RunnerOptions options,
                                                       std::function<void()> changed) {
  ASSIGN_OR_RETURN(ModelLayout layout, LayoutFor(job.spec().model()));
  ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy, MakeStrategy(StrategyParamsOf(job.spec().strategy())));
  RETURN_IF_ERROR(MakeDirs(options.checkpoint_dir, 0700));
  const bool resume = options.resume;
  std::unique_ptr<JobRunner> runner(new JobRunner(std::move(job), std::move(layout),
                                                  std::move(strategy), registry, store,
                                                  std::move(options), std::move(changed)));
  if (resume) RETURN_IF_ERROR(runner->Resume());
  return runner;
}

Status JobRunner::Resume() {
  const std::string& id = job_.id();
  ASSIGN_OR_RETURN(std::vector<CheckpointRecord> records, store_->LoadCheckpoints(id));
  uint32_t last_committed = 0;
  for (const auto& r : job_.rounds()) last_committed = std::max(last_committed, r.round());
  uint32_t from = 0;  // round 0: the initial model, derived from the seed
  for (const CheckpointRecord& r : records) {
    std::string model, optimizer;
    Status s = checkpoints_.Read(r, &model, &optimizer);
    if (s.ok()) {
      StatusOr<std::vector<TensorView>> views = DecodeParameters(model, layout_);
      if (!views.ok()) s = DataLoss("checkpoint " + r.file + ": " + views.status().message());
      if (s.ok()) s = server_optimizer_.LoadState(optimizer, layout_.total);
      if (s.ok()) {
        SetGlobal(Flatten(*views, layout_));
        from = r.round;
        break;
      }
    }
    FLEET_LOG(Error) << "job " << id << ": " << s.message() << "; falling back to the "
                     << "previous checkpoint";
  }
  if (from == 0) {
    SetGlobal(InitialParameters(layout_, job_.spec().seed()));
    RETURN_IF_ERROR(server_optimizer_.LoadState("", layout_.total));
  }
  if (from < last_committed) {
    FLEET_LOG(Error) << "job " << id << ": rounds " << from + 1 << ".." << last_committed
                     << " lost their checkpoint and will run again";
    RETURN_IF_ERROR(store_->DropRoundsAfter(id, from));
    auto* rounds = job_.mutable_rounds();
    for (int i = rounds->size() - 1; i >= 0; --i) {
      if (rounds->Get(i).round() > from) rounds->DeleteSubrange(i, 1);
    }
  }
  next_round_ = from + 1;
  last_round_.insert(job_.last_selected().begin(), job_.last_selected().end());
  job_.set_restarts(job_.restarts() + 1);
  job_.set_last_restart_unix_ms(UnixMillis());
  job_.set_resumed_from_round(from);
  job_.set_current_round(std::min(next_round_, job_.spec().rounds()));
  job_.set_updated_unix_ms(job_.last_restart_unix_ms());
  MarkRevealsOfReplayedRounds();
  RETURN_IF_ERROR(store_->SaveJob(job_));
  checkpoints_.RemoveBefore(from);
  FLEET_LOG(Warn) << "job " << id << ": resumed after a coordinator restart (restart "
                  << job_.restarts() << ") from "
                  << (from == 0 ? std::string("the initial model")
                                : "round " + std::to_string(from) + "'s checkpoint")
                  << "; round " << next_round_ << " starts over";
  return OkStatus();
}

JobRunner::JobRunner(v1::JobStatus job, ModelLayout layout, std::unique_ptr<Strategy> strategy,
                     DeviceRegistry* registry, JobStore* store, RunnerOptions options,
                     std::function<void()> changed)
    : layout_(std::move(layout)),
      strategy_(std::move(strategy)),
      server_optimizer_(ServerOptimizerFor(StrategyParamsOf(job.spec().strategy()))),
      registry_(registry),
      store_(store),
      options_(std::move(options)),
      changed_(std::move(changed)),
      checkpoints_(options_.checkpoint_dir),
      dataset_(job.spec().dataset()),
      job_(std::move(job)) {
  SetGlobal(InitialParameters(layout_, job_.spec().seed()));
  if (secure()) initial_model_hash_ = Blake2bHex(global_encoded_);
  // The encoded size of a well-formed update is fixed by the layout; allow a margin for
  // FlatBuffers padding and nothing more.
  max_update_bytes_ = global_encoded_.size() + 4096;
  if (secure()) {
    const auto& sa = job_.spec().secure_aggregation();
    quant_.clip = sa.clip();
    quant_.value_bits = sa.value_bits();
    quant_.max_weight = sa.max_weight();
    // Validated at submission; a stored job that no longer validates fails its first round.
    StatusOr<uint32_t> bits =
        ModulusBitsFor(MaxRoundSize(job_.spec()), sa.value_bits(), sa.max_weight());
    quant_.modulus_bits = bits.ok() ? *bits : 64;
    size_t masked = (layout_.total + kSecAggExtraElements) * quant_.modulus_bits / 8;
    max_update_bytes_ = std::max(max_update_bytes_, masked);
  }
}

JobRunner::~JobRunner() {
  Stop();
  if (thread_.joinable()) thread_.join();
}

void JobRunner::Start() { thread_ = std::thread([this] { Run(); }); }

void JobRunner::Halt() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!stop_) halted_ = true;
  stop_ = true;
  cv_.notify_all();
}

void JobRunner::Stop(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!stop_) stop_reason_ = reason;
  stop_ = true;
  cv_.notify_all();
}

v1::JobStatus JobRunner::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return job_;
}

bool JobRunner::Finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Terminal(job_.state());
}

void JobRunner::Persist() {
  v1::JobStatus copy = Snapshot();
  Status s = store_->SaveJob(copy);
  if (!s.ok()) FLEET_LOG(Error) << "job " << copy.id() << ": cannot persist state: " << s.message();
}

void JobRunner::SetState(v1::JobStatus::State state, const std::string& error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (job_.state() == state && job_.error() == error) return;
    job_.set_state(state);
    job_.set_error(error);
    job_.set_updated_unix_ms(UnixMillis());
  }
  Persist();
  changed_();
}

// The global model is serialized once per change and shared by the checkpoint, the evaluation
// task and the next round's training task.
void JobRunner::SetGlobal(std::vector<float> params) {
  global_ = std::move(params);
  global_encoded_ = EncodeParameters(layout_, global_.data());
}

DeviceRegistry::TaskBytes JobRunner::MakeTask(v1::Task::Kind kind, uint32_t round,
                                              const std::string& attempt_nonce) const {
  auto task = std::make_unique<v1::Task>();
  task->set_kind(kind);
  task->set_job_id(job_.id());
  task->set_round(round);
  task->set_dataset(job_.spec().dataset());
  *task->mutable_model() = job_.spec().model();
  *task->mutable_train() = job_.spec().train();
  task->set_parameters(global_encoded_);
  task->set_resume_epoch(job_.restarts());
  task->set_seed(job_.spec().seed() * 1000003ULL + round);
  if (kind == v1::Task::TRAIN && secure()) {
    const auto& sa = job_.spec().secure_aggregation();
    v1::SecAggTaskConfig* c = task->mutable_secagg();
    c->set_modulus_bits(quant_.modulus_bits);
    c->set_value_bits(quant_.value_bits);
    c->set_clip(quant_.clip);
    c->set_max_weight(quant_.max_weight);
    c->set_min_survivors(job_.spec().min_clients());
    c->set_stage_timeout_ms(sa.stage_timeout_s() * 1000);
    c->set_round_deadline_ms(job_.spec().round_deadline_s() * 1000);
    c->set_attempt_nonce(attempt_nonce);
    // Signed with the task: devices derive (k, t) from it and refuse weaker parameters.
    SetThreatModel(ThreatModelOf(sa), c);
  }
  // Serialized once, signed over exactly these bytes (one BLAKE2b pass per task, not per
  // device), and sent as they are to every device of the round.
  return std::make_shared<const std::string>(SealTask(*task, options_.model_key));
}

void JobRunner::Run() {
  const v1::JobSpec spec = job_.spec();
  const std::string id = job_.id();
  uint32_t round = next_round_;
  uint32_t failures = 0;
  FLEET_LOG(Info) << "job " << id << " (" << spec.name() << "): "
                  << (round > 1 ? "continuing at round " + std::to_string(round) : "starting")
                  << ", " << spec.rounds() << " rounds, " << layout_.total << " parameters";
  while (round <= spec.rounds() && !stop_) {
    v1::RoundSummary summary;
    auto started = std::chrono::steady_clock::now();
    std::string why;
    // The round changes the model and the optimizer only in memory; if it cannot be committed
    // they go back to where the last committed round left them.
    const std::vector<float> committed_global = global_;
    const ServerOptimizer committed_optimizer = server_optimizer_;
    attempt_ = NextAttempt(round, failures);
    bool ok = RunRound(round, &summary, &why);
    bool committed = false;
    if (ok && !stop_) {
      failpoint::Hit("round.aggregated", round);
      Evaluate(round, &summary);
      summary.set_duration_s(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      // Recorded before the commit, so no round ever counts without its record. A round that
      // cannot be recorded is not committed, and the job stops: continuing would count rounds
      // unaudited, and running it again would recompute a sum that may already be revealed.
      Status audited = AuditRound(summary);
      if (!audited.ok()) {
        SetGlobal(committed_global);
        server_optimizer_ = committed_optimizer;
        const std::string error =
            "round " + std::to_string(round) + " cannot be recorded in the audit log (" +
            audited.message() +
            "); it was not committed and the job stopped rather than run "
            "unaudited. Fix the audit log, restart the coordinator and submit the job again";
        FLEET_LOG(Error) << "job " << id << ": " << error;
        RecordFailureAfterUnmask(round, error);  // a revealed sum stays final for its devices
        SetState(v1::JobStatus::FAILED, error);
        return;
      }
      Status c = CommitRound(summary);
      if (!c.ok()) {
        ok = false;
        why = "cannot make the round durable: " + c.message();
        FLEET_LOG(Error) << "job " << id << " round " << round << ": " << why
                         << "; the last committed checkpoint stays in force";
        if (options_.audit != nullptr) {
          // Best effort (the append logs its own failure): the record above is not the end.
          (void)options_.audit->Append("round_not_committed", "coordinator",
                                       {{"job_id", id}, {"round", round}, {"reason", why}});
        }
      } else {
        committed = true;
      }
    }
    if (!committed) {
      std::string end = why;
      if (end.empty()) {
        std::lock_guard<std::mutex> lock(mu_);
        end = halted_ ? "the coordinator shut down before the round was committed"
                      : "the job was stopped before the round was committed (" + stop_reason_ + ")";
      }
      RecordFailureAfterUnmask(round, end);
    }
    if (!ok) {
      SetGlobal(committed_global);
      server_optimizer_ = committed_optimizer;
    }
    if (stop_) break;
    if (!ok) {
      ++failures;
      FLEET_LOG(Warn) << "job " << id << " round " << round << ": " << why << " (attempt "
                      << failures << " of " << spec.max_round_retries() + 1 << ")";
      if (failures > spec.max_round_retries()) {
        SetState(v1::JobStatus::FAILED, "round " + std::to_string(round) + " failed " +
                                            std::to_string(failures) + " times; last: " + why);
        return;
      }
      continue;
    }
    failures = 0;
    changed_();
    FLEET_LOG(Info) << "job " << id << " round " << round << "/" << spec.rounds() << ": "
                    << summary.participants() << "/" << summary.selected() << " updates ("
                    << summary.rejected() << " rejected), train_loss " << summary.train_loss()
                    << ", eval_accuracy " << summary.eval_accuracy() << " on "
                    << summary.eval_clients() << " clients, " << summary.duration_s() << " s";
    failpoint::Hit("round.committed", round);
    ++round;
  }
  if (stop_) {
    std::string reason;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (halted_) {
        FLEET_LOG(Info) << "job " << id << ": halted for shutdown; it resumes at round " << round
                        << " when the coordinator starts again";
        return;
      }
      reason = stop_reason_;
    }
    SetState(v1::JobStatus::STOPPED, reason);
  } else {
    SetState(v1::JobStatus::SUCCEEDED);
  }
  FLEET_LOG(Info) << "job " << id << ": " << v1::JobStatus::State_Name(Snapshot().state());
}

Status JobRunner::AuditRound(const v1::RoundSummary& summary) {
  if (options_.audit == nullptr) return OkStatus();
  return options_.audit->Append("round_complete", "coordinator",
                                {{"job_id", job_.id()},
                                 {"round", summary.round()},
                                 {"participants", summary.participants()},
                                 {"secure", summary.secure()}});
}

void JobRunner::WaitForAnswers(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  // Over-selected plain rounds close as soon as `target` updates were accepted.
  auto enough = [&] {
    return round_.phase == Phase::kTrain && !secure() && round_.target > 0 &&
           strategy_->accepted() >= round_.target;
  };
  while (!stop_ && round_.answered.size() < round_.selected.size() && !enough() &&
         std::chrono::steady_clock::now() < deadline) {
    cv_.wait_for(lock, options_.wait_poll);
    // A device that went offline will not answer: stop waiting for it.
    for (const auto& id : round_.selected) {
      if (round_.answered.count(id) == 0 && !registry_->IsOnline(id)) {
        FLEET_LOG(Warn) << "job " << job_.id() << " round " << round_.round << ": device " << id
                        << " went offline, dropping it from the round";
        round_.answered.insert(id);
      }
    }
  }
}

bool JobRunner::RunRound(uint32_t round, v1::RoundSummary* summary, std::string* why) {
  const v1::JobSpec& spec = job_.spec();
  summary->set_round(round);

  // Wait for enough eligible devices. Under secure aggregation the devices whose updates are in a
  // sum already revealed over this model sit out (they would let two sums be subtracted).
  if (secure()) round_model_hash_ = Blake2bHex(global_encoded_);
  RoundPlan plan;
  while (!stop_) {
    const uint32_t competing =
        options_.competing_jobs ? std::max(1u, options_.competing_jobs(spec.dataset())) : 1;
    plan = PlanRound(spec, job_.id(), round, registry_->List(), last_round_, competing,
                     secure() ? RevealedOverCurrentModel() : RevealedExclusions{});
    if (plan.waiting_for.empty()) break;
    bool changed;
    {
      std::lock_guard<std::mutex> lock(mu_);
      changed = job_.waiting_for() != plan.waiting_for;
      job_.set_waiting_for(plan.waiting_for);
    }
    if (changed) FLEET_LOG(Info) << "job " << job_.id() << ": waiting: " << plan.waiting_for;
    SetState(v1::JobStatus::PENDING);
    if (changed) changed_();
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, options_.wait_poll);
  }
  if (stop_) return false;
  if (secure()) {
    const size_t sitting_out = RevealedOverCurrentModel().size();
    if (sitting_out > 0) {
      FLEET_LOG(Info) << "job " << job_.id() << " round " << round << " attempt " << attempt_
                      << ": " << sitting_out << " devices sit out: their updates are in a sum "
                      << "already revealed over model " << round_model_hash_.substr(0, 12);
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_.set_current_round(round);
    job_.clear_waiting_for();
  }
  SetState(v1::JobStatus::RUNNING);
  changed_();

  std::vector<std::string> chosen =
      strategy_->SelectClients(plan.candidates, round, plan.select, spec.seed());
  // Every attempt of a secure round gets its own nonce (and task): no SecAgg message of one
  // attempt verifies in another.
  std::string attempt_nonce;
  if (secure()) {
    attempt_nonce.resize(secagg_wire::kAttemptNonceBytes);
    randombytes_buf(attempt_nonce.data(), attempt_nonce.size());
  }
  DeviceRegistry::TaskBytes task = MakeTask(v1::Task::TRAIN, round, attempt_nonce);
  {
    std::lock_guard<std::mutex> lock(mu_);
    round_ = RoundState{};
    round_.phase = Phase::kTrain;
    round_.round = round;
    round_.attempt_nonce = attempt_nonce;
    round_.target = plan.target;
    // Updates come until the round's deadline; a secure round first runs two key stages (its
    // bound is refined when the masked-input stage opens).
    round_.uploads_until =
        std::chrono::steady_clock::now() + std::chrono::seconds(spec.round_deadline_s()) +
        (secure() ? 2 * std::chrono::seconds(spec.secure_aggregation().stage_timeout_s())
                  : std::chrono::seconds(0));
    secagg_.reset();  // RunSecureStages installs this round's; SecAgg RPCs wait for it
    strategy_->BeginRound(global_);
    for (const auto& id : chosen) {
      if (secure() && registry_->SigningKey(id).size() != 32) {
        FLEET_LOG(Warn) << "job " << job_.id() << ": device " << id
                        << " has no signing key (old client?); it cannot join secure rounds";
        continue;
      }
      if (registry_->Reserve(id, job_.id(), task)) {
        round_.selected.insert(id);
        last_round_[id] = round;
      }
    }
  }
  summary->set_selected(static_cast<uint32_t>(round_.selected.size()));
  if (secure()) return RunSecureStages(round, summary, why);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(spec.round_deadline_s());
  {
    std::lock_guard<std::mutex> lock(mu_);
    round_.uploads_until = deadline;
  }
  WaitForAnswers(deadline);
  failpoint::Hit("round.collected", round);

  StatusOr<std::vector<float>> next = FailedPrecondition("round did not run");
  FitMetrics fit;
  {
    std::lock_guard<std::mutex> lock(mu_);
    round_.phase = Phase::kIdle;
    for (const auto& id : round_.selected) {
      if (round_.answered.count(id) == 0) {
        FLEET_LOG(Warn) << "job " << job_.id() << " round " << round << ": device " << id
                        << " missed the " << spec.round_deadline_s() << " s deadline (straggler)";
      }
      registry_->Release(id, job_.id());
    }
    summary->set_participants(static_cast<uint32_t>(strategy_->accepted()));
    summary->set_rejected(round_.rejected);
    if (strategy_->accepted() >= spec.min_clients()) next = strategy_->FinishFit(&fit);
  }
  if (!next.ok()) {
    *why = "only " + std::to_string(summary->participants()) + " valid updates, min_clients is " +
           std::to_string(spec.min_clients());
    return false;
  }
  // The aggregate's step from the current model goes through the server optimizer (plain
  // FedAvg: the aggregate itself).
  std::vector<float> delta = std::move(next).value();
  for (size_t i = 0; i < delta.size(); ++i) delta[i] -= global_[i];
  std::vector<float> updated = global_;
  server_optimizer_.Apply(&updated, delta);
  SetGlobal(std::move(updated));
  summary->set_train_loss(fit.train_loss);
  summary->set_val_accuracy(fit.val_accuracy);
  return true;
}

void JobRunner::Evaluate(uint32_t round, v1::RoundSummary* summary) {
  const v1::JobSpec& spec = job_.spec();
  // Evaluation asks only for the data: online, free devices holding evaluation examples.
  std::vector<std::string> candidates;
  for (const v1::DeviceStatus& d : registry_->List()) {
    if (d.online() && d.reserved_by().empty() && IneligibleReason(d, spec, false).empty()) {
      candidates.push_back(d.id());
    }
  }
  if (candidates.empty() || stop_) return;
  DeviceRegistry::TaskBytes task = MakeTask(v1::Task::EVALUATE, round);
  {
    std::lock_guard<std::mutex> lock(mu_);
    round_ = RoundState{};
    round_.phase = Phase::kEvaluate;
    round_.round = round;
    for (const auto& id : candidates) {
      if (registry_->Reserve(id, job_.id(), task)) round_.selected.insert(id);
    }
  }
  WaitForAnswers(std::chrono::steady_clock::now() + std::chrono::seconds(spec.eval_deadline_s()));
  std::lock_guard<std::mutex> lock(mu_);
  round_.phase = Phase::kIdle;
  for (const auto& id : round_.selected) registry_->Release(id, job_.id());
  EvalMetrics agg = strategy_->AggregateEvaluate(round_.evals);
  summary->set_eval_clients(static_cast<uint32_t>(round_.evals.size()));
  summary->set_eval_loss(agg.loss);
  summary->set_eval_accuracy(agg.accuracy);
}

Status JobRunner::AdmitUpload(const v1::UpdateHeader& header,
                              std::chrono::steady_clock::time_point* until) const {
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(secure() ? AdmitMaskedUploadLocked(header) : AdmitPlainUploadLocked(header));
  *until = round_.uploads_until;
  return OkStatus();
}

Status JobRunner::AdmitPlainUploadLocked(const v1::UpdateHeader& header) const {
  const std::string& device = header.device_id();
  if (header.masked()) {
    return InvalidArgument("job " + job_.id() + " does not use secure aggregation; send a "
                           "plain update");
  }
  if (round_.phase != Phase::kTrain || header.round() != round_.round) {
    return FailedPrecondition("job " + job_.id() + " is not collecting updates for round " +
                              std::to_string(header.round()));
  }
  if (round_.selected.count(device) == 0) {
    return FailedPrecondition("device " + device + " was not selected for round " +
                              std::to_string(header.round()));
  }
  if (round_.answered.count(device) > 0) {
    return Status(StatusCode::kAlreadyExists, "device " + device +
                                                  " already answered round " +
                                                  std::to_string(header.round()));
  }
  return OkStatus();
}

Status JobRunner::OnUpdate(const v1::UpdateHeader& header, std::string_view payload) {
  if (secure()) return OnMaskedUpdate(header, payload);
  std::lock_guard<std::mutex> lock(mu_);
  const std::string& device = header.device_id();
  RETURN_IF_ERROR(AdmitPlainUploadLocked(header));
  round_.answered.insert(device);
  cv_.notify_all();
  if (round_.target > 0 && strategy_->accepted() >= round_.target) {
    // Over-selection: the round already has what it needs; later updates are not counted.
    return FailedPrecondition("round " + std::to_string(round_.round) + " of job " + job_.id() +
                              " closed at its target of " + std::to_string(round_.target) +
                              " updates");
  }
  if (!header.error().empty()) {
    round_.rejected++;
    FLEET_LOG(Warn) << "job " << job_.id() << " round " << round_.round << ": device " << device
                    << " could not train: " << Utf8Prefix(header.error(), 300);
    return OkStatus();
  }

  auto reject = [&](const std::string& why) {
    round_.rejected++;
    FLEET_LOG(Warn) << "job " << job_.id() << " round " << round_.round << ": rejected update from "
                    << device << ": " << why;
    return InvalidArgument("update rejected: " + why);
  };
  if (header.num_examples() == 0 || header.num_examples() > (uint64_t{1} << 32)) {
    return reject("num_examples " + std::to_string(header.num_examples()) + " out of range");
  }
  for (double m : {header.train_loss(), header.val_loss(), header.val_accuracy()}) {
    if (!std::isfinite(m)) return reject("non-finite metric");
  }
  StatusOr<std::vector<TensorView>> views = DecodeParameters(payload, layout_);
  if (!views.ok()) return reject(views.status().message());
  std::vector<ParamSpan> spans;
  spans.reserve(views->size());
  for (const TensorView& v : *views) spans.push_back({v.data, v.slot->offset, v.slot->numel});
  FitMetrics metrics{header.num_examples(), header.train_loss(), header.val_loss(),
                     header.val_accuracy()};
  Status s = strategy_->AccumulateFit(spans, metrics);
  if (!s.ok()) return reject(s.message());
  return OkStatus();
}

Status JobRunner::OnMetrics(const v1::MetricsReport& report) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string& device = report.device_id();
  if (round_.phase != Phase::kEvaluate || report.round() != round_.round) {
    return FailedPrecondition("job " + job_.id() + " is not evaluating round " +
                              std::to_string(report.round()));
  }
  if (round_.selected.count(device) == 0) {
    return FailedPrecondition("device " + device + " was not asked to evaluate");
  }
  if (round_.answered.count(device) > 0) {
    return Status(StatusCode::kAlreadyExists, "device " + device + " already reported");
  }
  round_.answered.insert(device);
  cv_.notify_all();
  if (!report.error().empty()) {
    FLEET_LOG(Warn) << "job " << job_.id() << ": device " << device
                    << " could not evaluate: " << Utf8Prefix(report.error(), 300);
    return OkStatus();
  }
  if (!std::isfinite(report.loss()) || !std::isfinite(report.accuracy()) ||
      report.accuracy() < 0 || report.accuracy() > 1 || report.num_examples() == 0) {
    FLEET_LOG(Warn) << "job " << job_.id() << ": rejected evaluation from " << device
                    << ": metrics out of range";
    return InvalidArgument("evaluation metrics out of range");
  }
  round_.evals.push_back({report.num_examples(), report.loss(), report.accuracy()});
  return OkStatus();
}

Status JobRunner::CommitRound(const v1::RoundSummary& summary) {
  const uint32_t round = summary.round();
  ASSIGN_OR_RETURN(CheckpointRecord record,
                   checkpoints_.Write(round, global_encoded_, server_optimizer_.SaveState()));
  failpoint::Hit("checkpoint.before_commit", round);
  v1::JobStatus next = Snapshot();
  *next.add_rounds() = summary;
  next.set_updated_unix_ms(UnixMillis());
  // Only the selections that can still keep a device out of round + 1 are worth keeping.
  const uint32_t cooldown = job_.spec().selection().cooldown_rounds();
  for (auto it = last_round_.begin(); it != last_round_.end();) {
    it = it->second + cooldown > round ? std::next(it) : last_round_.erase(it);
  }
  next.mutable_last_selected()->clear();
  next.mutable_last_selected()->insert(last_round_.begin(), last_round_.end());
  // Revealed sums matter while the job may train from their model again: the one this round
  // started from (a restart falls back to it when the new checkpoint is damaged) and the initial
  // model (when no checkpoint verifies). The new model has none yet.
  auto* revealed = next.mutable_revealed();
  for (int i = revealed->size() - 1; i >= 0; --i) {
    const std::string& model = revealed->Get(i).model_blake2b();
    if (model != round_model_hash_ && model != initial_model_hash_) {
      revealed->DeleteSubrange(i, 1);
    }
  }
  // Keep this round's checkpoint and the one before: if this one is found damaged after a
  // restart, the job resumes one round earlier instead of from scratch.
  const uint32_t keep_from = round > 1 ? round - 1 : 1;
  RETURN_IF_ERROR(store_->CommitRound(next, summary, record, keep_from));
  {
    std::lock_guard<std::mutex> lock(mu_);
    *job_.add_rounds() = summary;
    job_.set_updated_unix_ms(next.updated_unix_ms());
    *job_.mutable_last_selected() = next.last_selected();
    *job_.mutable_revealed() = next.revealed();
  }
  checkpoints_.RemoveBefore(keep_from);
  return OkStatus();
}

}  // namespace fleet
