#include "client/client_runner.h"

#include <sodium.h>

#include <functional>
#include <optional>
#include <thread>

#include "aggregation/quantize.h"
#include "aggregation/secagg_client.h"
#include "client/trainer.h"
#include "client/update_upload.h"
#include "common/backoff.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/model_layout.h"
#include "common/tensor_codec.h"

namespace fleet {
namespace {
constexpr char kSoftwareVersion[] = "fleet-client/0.1.0";
}  // namespace

StatusOr<std::unique_ptr<ClientRunner>> ClientRunner::Create(ClientConfig config,
                                                           ControlHooks hooks) {
  if (!config.tls.insecure) {
    if (config.state_dir.empty()) {
      return InvalidArgument("state_dir is required: it keeps the device key and certificate");
    }
    if (config.coordinator.empty()) {
      StatusOr<Bootstrap> b = LoadBootstrap(config.bootstrap);
      if (!b.ok()) {
        return InvalidArgument("no coordinator address in the config and no usable bootstrap "
                               "file: " + b.status().message());
      }
      config.coordinator = b->coordinator;
    }
  } else if (config.coordinator.empty()) {
    config.coordinator = "127.0.0.1:7443";
  }
  std::unique_ptr<ClientRunner> r(new ClientRunner(std::move(config), std::move(hooks)));
  if (r->config_.allow_plain_rounds) {
    FLEET_LOG(Warn) << "allow_plain_rounds: this device trains in jobs with secure aggregation "
                       "off, and sends those updates to the coordinator in the clear";
  }
  if (r->config_.tls.insecure) {
    FLEET_LOG(Warn) << "--insecure: no device certificate, models are accepted UNSIGNED, and "
                       "secure-aggregation neighbours' keys are taken on the coordinator's word "
                       "(a dishonest coordinator can fabricate neighbours)";
    r->insecure_signing_key_ = std::make_unique<crypto::SigningKey>(crypto::SigningKey::Generate());
    RETURN_IF_ERROR(r->Connect(r->config_.tls));
  } else {
    // Loaded before anything else can arrive: a device that lost track of what it accepted would
    // take a rolled-back model.
    ASSIGN_OR_RETURN(r->accepted_,
                     AcceptedRoundsFile::Open(r->config_.state_dir + "/accepted-rounds"));
  }
  RETURN_IF_ERROR(r->LoadData());
  const std::string& dir = r->config_.state_dir;
  StatusOr<UnmaskHistory> history =
      UnmaskHistory::Load(dir.empty() ? "" : dir + "/" + UnmaskHistory::kFileName);
  if (history.ok()) {
    r->unmask_history_ = std::move(history).value();
  } else {
    // Inference and plain training go on; secure aggregation is refused (MaySecurelyAggregate).
    r->unmask_history_error_ = history.status();
    FLEET_LOG(Error) << history.status().message();
  }
  return r;
}

ClientRunner::ClientRunner(ClientConfig config, ControlHooks hooks)
    : hooks_(std::move(hooks)), config_(std::move(config)) {}

namespace {
std::string ControlModelPath(const ClientConfig& c) { return c.state_dir + "/control-model.task"; }
}  // namespace

StatusOr<TrainResult> ClientRunner::Train(const v1::Task& task, const ModelLayout& layout,
                                          const std::vector<TensorView>& global,
                                          const LocalData& d) {
  const uint64_t seed = task.seed() ^ std::hash<std::string>{}(config_.device_id);
  if (hooks_.gate == nullptr) {
    return TrainLocal(task.model(), task.train(), layout, global, d.train, d.val, seed);
  }
  StatusOr<TrainResult> result = Internal("training did not run");
  control::TrainingGate* gate = hooks_.gate;
  Status s = control::RunAtTrainingPriority([&] {
    result = TrainLocal(task.model(), task.train(), layout, global, d.train, d.val, seed,
                        [gate] { gate->WaitIfPaused(); });
    return OkStatus();
  });
  if (!s.ok()) return s;
  return result;
}

void ClientRunner::OfferToControl(const v1::Task& task, const v1::SignedTask& signed_task,
                                  const ModelLayout& layout,
                                  const std::vector<TensorView>& params) {
  if (!hooks_.on_global_model || task.dataset() != hooks_.model_dataset) return;
  hooks_.on_global_model(task, Flatten(params, layout));
  if (config_.state_dir.empty()) return;
  // Kept as received, signature included, and verified again like a new task when restored.
  Status w = WriteFileAtomically(ControlModelPath(config_), signed_task.SerializeAsString(), 0600);
  if (!w.ok()) FLEET_LOG(Warn) << "control model not kept for the next start: " << w.message();
}

void ClientRunner::RestoreControlModel() {
  if (control_model_restored_ || !hooks_.on_global_model || config_.state_dir.empty()) return;
  control_model_restored_ = true;
  const std::string path = ControlModelPath(config_);
  if (!FileExists(path)) return;
  v1::Task task;
  auto load = [&]() -> StatusOr<std::vector<float>> {
    ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
    v1::SignedTask signed_task;
    if (!signed_task.ParseFromString(bytes) || signed_task.task().empty()) {
      return DataLoss("not a SignedTask message");
    }
    ASSIGN_OR_RETURN(task, OpenTask(signed_task, /*record=*/false));
    ASSIGN_OR_RETURN(ModelLayout layout, LayoutFor(task.model()));
    ASSIGN_OR_RETURN(std::vector<TensorView> views, DecodeParameters(task.parameters(), layout));
    return Flatten(views, layout);
  };
  StatusOr<std::vector<float>> params = load();
  if (!params.ok()) {
    FLEET_LOG(Warn) << "kept control model " << path << " not used: " << params.status().message()
                    << "; the safe default stays until a job delivers a model";
    return;
  }
  FLEET_LOG(Info) << "control: restored the model of job " << task.job_id() << " round "
                  << task.round() << " from " << path;
  hooks_.on_global_model(task, std::move(params).value());
}

std::shared_ptr<v1::Device::Stub> ClientRunner::Stub() {
  std::lock_guard<std::mutex> lock(mu_);
  return stub_;
}

Status ClientRunner::Connect(const ClientTlsOptions& tls) {
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                   MakeChannel(config_.coordinator, tls,
                               static_cast<int>(config_.max_message_mb) * 1024 * 1024));
  std::lock_guard<std::mutex> lock(mu_);
  stub_ = v1::Device::NewStub(channel);
  return OkStatus();
}

int64_t ClientRunner::Now() const {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
             .count() +
         config_.clock_offset_s;
}

Status ClientRunner::EnsureIdentity() {
  StatusOr<DeviceCredentials> c = NotFound("the coordinator refused the stored certificate");
  if (refused_.empty()) c = LoadCredentials(config_.state_dir, config_.device_id, Now());
  if (c.ok()) {
    FLEET_LOG(Info) << "device certificate " << c->cert.serial << " valid until unix "
                    << c->cert.not_after;
  } else {
    if (c.status().code() != StatusCode::kNotFound) {
      FLEET_LOG(Warn) << "stored certificate unusable (" << c.status().message()
                      << "); enrolling again";
    }
    StatusOr<Bootstrap> b = LoadBootstrap(config_.bootstrap);
    if (!b.ok()) {
      if (refused_.empty()) return b.status();
      return FailedPrecondition("certificate refused (" + refused_ +
                                ") and no bootstrap file to enroll again (" + b.status().message() +
                                "): re-provision this device");
    }
    FLEET_LOG(Info) << "enrolling with " << b->coordinator << " (bootstrap " << config_.bootstrap
                    << ")";
    enroll_retry_after_ = std::chrono::milliseconds(0);
    c = EnrollDevice(config_, *b, Now(), &enroll_retry_after_);
    if (!c.ok()) {
      const StatusCode code = c.status().code();
      if (refused_.empty() || code == StatusCode::kUnavailable ||
          code == StatusCode::kDeadlineExceeded || code == StatusCode::kResourceExhausted) {
        return c.status();
      }
      return Status(code, "certificate refused (" + refused_ + ") and enrolling again failed (" +
                              c.status().message() + ")");
    }
    FLEET_LOG(Info) << (refused_.empty() ? "enrolled: certificate "
                                         : "enrolled again: certificate ")
                    << c->cert.serial << " valid until unix " << c->cert.not_after;
    refused_.clear();
  }
  return Adopt(std::move(c).value());
}

Status ClientRunner::Adopt(DeviceCredentials creds) {
  // The accepted rounds are kept per job id (random per coordinator), so they stay valid when
  // the device moves to another coordinator's key.
  if (!guard_ || guard_->key() != creds.model_key) {
    guard_ = std::make_unique<ModelGuard>(creds.model_key, accepted_.get());
  }
  if (!verifier_ || verifier_ca_ != creds.ca_pem) {
    ASSIGN_OR_RETURN(verifier_, crypto::CertificateVerifier::Create(creds.ca_pem));
    verifier_ca_ = creds.ca_pem;
  }
  if (!creds.secagg_key) {
    FLEET_LOG(Warn) << "no certified secure-aggregation signing key: " << creds.secagg_missing
                    << "; renewing the certificate now to get one (until then this device "
                       "cannot take part in secure rounds)";
  }
  creds_ = std::make_unique<DeviceCredentials>(std::move(creds));
  return Connect(creds_->Tls(config_.tls.server_name));
}

const crypto::SigningKey* ClientRunner::SecAggSigningKey() const {
  if (config_.tls.insecure) return insecure_signing_key_.get();
  return creds_ && creds_->secagg_key ? creds_->secagg_key.get() : nullptr;
}

void ClientRunner::MaybeRenew() {
  if (!creds_) return;
  const int64_t due = creds_->secagg_key ? RenewalTime(creds_->cert) : 0;
  if (Now() < std::max(due, next_renewal_attempt_)) return;
  if (Now() >= creds_->cert.not_after) {
    creds_.reset();  // expired: the main loop enrolls again
    joined_ = false;
    return;
  }
  StatusOr<DeviceCredentials> c = RenewCertificate(Stub().get(), config_, *creds_, Now());
  if (!c.ok()) {
    next_renewal_attempt_ = Now() + 30;
    FLEET_LOG(Warn) << "certificate renewal failed: " << c.status().message()
                    << " (retrying in 30 s; expires at unix " << creds_->cert.not_after << ")";
    return;
  }
  FLEET_LOG(Info) << "certificate renewed: " << c->cert.serial << " valid until unix "
                  << c->cert.not_after;
  Status s = Adopt(std::move(c).value());
  if (!s.ok()) FLEET_LOG(Error) << "cannot reconnect with the renewed certificate: " << s.message();
  // Join again: the coordinator must register the new SecAgg key with the certificate that
  // certifies it, or its neighbours would be sent the old ones.
  joined_ = false;
}

void ClientRunner::Reenroll(const std::string& refusal) {
  FLEET_LOG(Warn) << "the coordinator refused this device's certificate: " << refusal;
  creds_.reset();
  joined_ = false;
  refused_ = refusal;
}

StatusOr<v1::Task> ClientRunner::OpenTask(const v1::SignedTask& signed_task, bool record) {
  if (config_.tls.insecure) {  // unsigned tasks accepted: warned at startup
    v1::Task task;
    if (!task.ParseFromString(signed_task.task())) return InvalidArgument("malformed task");
    return task;
  }
  return record ? guard_->Accept(signed_task) : guard_->Check(signed_task);
}

ClientRunner::~ClientRunner() { Stop(); }

Status ClientRunner::LoadData() {
  if (config_.datasets.empty()) {
    FLEET_LOG(Warn) << "no datasets configured: this device enrolls and joins but no job will "
                       "select it until 'datasets' lists its sensor data";
  }
  const uint64_t split_seed = std::hash<std::string>{}(config_.device_id);
  for (const DatasetSpec& spec : config_.datasets) {
    if (data_.count(spec.name)) {
      return InvalidArgument("dataset '" + spec.name + "' is configured twice");
    }
    ASSIGN_OR_RETURN(Dataset all, LoadDataset(spec));
    LocalData d;
    d.spec = spec;
    if (spec.train) {
      SplitValidation(all, spec.validation_fraction, split_seed, &d.train, &d.val);
    } else {
      d.eval = std::move(all);
    }
    FLEET_LOG(Info) << "dataset " << spec.name << ": " << d.train.rows << " train, "
                    << d.val.rows << " validation, " << d.eval.rows << " evaluation rows, "
                    << std::max({d.train.cols, d.eval.cols}) << " features";
    data_[spec.name] = std::move(d);
  }
  if (hooks_.read_buffer) {
    if (data_.count(hooks_.buffer_dataset)) {
      return InvalidArgument("dataset '" + hooks_.buffer_dataset +
                             "' is both in datasets and control.train_dataset");
    }
    RefreshBufferData();
  }
  return OkStatus();
}

void ClientRunner::RefreshBufferData() {
  if (!hooks_.read_buffer) return;
  StatusOr<Dataset> all = hooks_.read_buffer();
  if (!all.ok()) {
    FLEET_LOG(Warn) << "dataset " << hooks_.buffer_dataset
                    << ": sample buffer unreadable: " << all.status().message();
    return;
  }
  LocalData d;
  d.spec.name = hooks_.buffer_dataset;
  SplitValidation(*all, hooks_.validation_fraction, std::hash<std::string>{}(config_.device_id),
                  &d.train, &d.val);
  FLEET_LOG(Info) << "dataset " << d.spec.name << " (sample buffer): " << d.train.rows
                  << " train, " << d.val.rows << " validation windows, " << all->cols
                  << " features";
  data_[d.spec.name] = std::move(d);
}

void ClientRunner::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stop_ = true;
  if (active_ != nullptr) active_->TryCancel();
  cv_.notify_all();
}

void ClientRunner::SetContext(grpc::ClientContext* ctx) {
  std::lock_guard<std::mutex> lock(mu_);
  active_ = ctx;
  if (ctx != nullptr && stop_) ctx->TryCancel();
}

bool ClientRunner::SleepUnlessStopped(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(mu_);
  return !cv_.wait_for(lock, d, [&] { return stop_; });
}

Status ClientRunner::Join() {
  v1::JoinRequest req;
  req.set_protocol_version(kProtocolVersion);
  req.set_device_id(config_.device_id);
  req.set_software_version(kSoftwareVersion);
  // The key the certificate of this connection certifies (the coordinator refuses any other).
  if (const crypto::SigningKey* key = SecAggSigningKey()) {
    req.set_signing_public_key(crypto::ToString(key->public_key()));
  }
  req.mutable_labels()->insert(config_.labels.begin(), config_.labels.end());
  *req.mutable_eligibility() = ReadEligibility(config_.eligibility);
  RefreshBufferData();
  for (const auto& [name, d] : data_) {
    auto* info = req.add_datasets();
    info->set_name(name);
    info->set_train_examples(d.train.rows);
    info->set_eval_examples(d.eval.rows);
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  SetContext(&ctx);
  v1::JoinResponse resp;
  grpc::Status s = Stub()->Join(&ctx, req, &resp);
  SetContext(nullptr);
  if (!s.ok()) return FromGrpcStatus(s);
  heartbeat_ms_ = std::max<uint32_t>(100, resp.heartbeat_interval_ms());
  return OkStatus();
}

namespace {
int64_t SteadyMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

bool ClientRunner::Healthy() const {
  const int64_t tick = heartbeat_tick_ms_.load();
  return tick == 0 || SteadyMillis() - tick < 10 * static_cast<int64_t>(heartbeat_ms_.load()) + 5000;
}

void ClientRunner::HeartbeatLoop() {
  heartbeat_tick_ms_ = SteadyMillis();
  while (SleepUnlessStopped(std::chrono::milliseconds(heartbeat_ms_.load()))) {
    heartbeat_tick_ms_ = SteadyMillis();
    if (!joined_) continue;
    v1::HeartbeatRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_device_id(config_.device_id);
    req.set_busy(busy_);
    *req.mutable_eligibility() = ReadEligibility(config_.eligibility);
    v1::HeartbeatResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    std::shared_ptr<v1::Device::Stub> stub = Stub();
    if (!stub) continue;
    grpc::Status s = stub->Heartbeat(&ctx, req, &resp);
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) joined_ = false;  // main loop rejoins
  }
}

Status ClientRunner::Run() {
  std::thread heartbeat([this] { HeartbeatLoop(); });
  Backoff backoff(std::chrono::milliseconds(200), std::chrono::seconds(10));
  Status fatal;
  int failures = 0;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) break;
    }
    if (!config_.tls.insecure && !creds_) {
      Status s = EnsureIdentity();
      if (!s.ok()) {
        const StatusCode c = s.code();
        if (c != StatusCode::kUnavailable && c != StatusCode::kDeadlineExceeded &&
            c != StatusCode::kResourceExhausted) {
          fatal = Status(c, (refused_.empty() ? "cannot obtain a device certificate: " : "") +
                                s.message() +
                                "; re-provision this device (bootstrap file with a valid token)");
          break;
        }
        if (failures++ % 10 == 0) {
          FLEET_LOG(Warn) << "cannot enroll yet: " << s.message() << " (retrying with backoff)";
        }
        // Not sooner than the coordinator's rate limit asked.
        SleepUnlessStopped(std::max(backoff.Next(), enroll_retry_after_));
        continue;
      }
      failures = 0;
      backoff.Reset();
    }
    MaybeRenew();
    if (!config_.tls.insecure && !creds_) continue;  // expired: enroll again
    RestoreControlModel();  // needs the model-signing key from the credentials
    if (!joined_) {
      Status s = Join();
      if (s.code() == StatusCode::kUnauthenticated && !config_.tls.insecure) {
        Reenroll(s.message());
        continue;
      }
      if (s.code() == StatusCode::kFailedPrecondition ||
          s.code() == StatusCode::kPermissionDenied) {
        fatal = s;
        break;
      }
      if (!s.ok()) {
        // Log the first failure and then every tenth, so a long outage does not flood the log.
        if (failures++ % 10 == 0) {
          FLEET_LOG(Warn) << "cannot join coordinator " << config_.coordinator << ": "
                          << s.message() << " (retrying with backoff)";
        }
        SleepUnlessStopped(backoff.Next());
        continue;
      }
      FLEET_LOG(Info) << "joined " << config_.coordinator << " as " << config_.device_id;
      joined_ = true;
      failures = 0;
      backoff.Reset();
    }

    v1::FetchTaskRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_device_id(config_.device_id);
    req.set_wait_ms(config_.poll_wait_ms);
    v1::SignedTask signed_task;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(config_.poll_wait_ms + 10000));
    SetContext(&ctx);
    grpc::Status s = Stub()->FetchTask(&ctx, req, &signed_task);
    SetContext(nullptr);
    if (!s.ok()) {
      if (s.error_code() == grpc::StatusCode::CANCELLED) continue;  // Stop() or revocation
      if (s.error_code() == grpc::StatusCode::UNAUTHENTICATED && !config_.tls.insecure) {
        Reenroll(s.error_message());
        continue;
      }
      if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
          s.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
        fatal = FromGrpcStatus(s);
        break;
      }
      FLEET_LOG(Warn) << "lost the coordinator (" << s.error_message() << "); rejoining";
      joined_ = false;
      SleepUnlessStopped(backoff.Next());
      continue;
    }
    if (signed_task.task().empty()) continue;  // the poll ended without a task
    busy_ = true;
    HandleSignedTask(signed_task);
    busy_ = false;
  }
  Stop();
  heartbeat.join();
  return fatal;
}

void ClientRunner::HandleSignedTask(const v1::SignedTask& signed_task) {
  StatusOr<v1::Task> task = OpenTask(signed_task, /*record=*/true);
  Status ts;
  if (task.ok()) {
    if (task->kind() == v1::Task::NONE) return;
    ts = HandleTask(*task, signed_task);
  } else {
    // Nothing of a refused task is used except the ids it claims, to decline it (so the round
    // does not wait for this device).
    v1::Task claimed = ClaimedIdentity(signed_task);
    FLEET_LOG(Error) << "job " << claimed.job_id() << " round " << claimed.round() << ": "
                     << task.status().message();
    ts = Decline(claimed, task.status());
    task = std::move(claimed);
  }
  if (!ts.ok()) {
    FLEET_LOG(Warn) << "job " << task->job_id() << " round " << task->round() << ": "
                    << ts.message();
  }
}

Status ClientRunner::Decline(const v1::Task& task, const Status& why) {
  if (task.kind() == v1::Task::TRAIN) {
    v1::UpdateHeader header;
    header.set_protocol_version(kProtocolVersion);
    header.set_device_id(config_.device_id);
    header.set_job_id(task.job_id());
    header.set_round(task.round());
    header.set_error(why.message());
    Status s = SendUpdate(header, "");
    if (!s.ok()) FLEET_LOG(Debug) << "decline not delivered: " << s.message();
  } else if (task.kind() == v1::Task::EVALUATE) {
    v1::MetricsReport report;
    report.set_protocol_version(kProtocolVersion);
    report.set_device_id(config_.device_id);
    report.set_job_id(task.job_id());
    report.set_round(task.round());
    report.set_error(why.message());
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ReportMetricsResponse resp;
    Stub()->ReportMetrics(&ctx, report, &resp);
  }
  return why;
}

Status ClientRunner::HandleTask(const v1::Task& task, const v1::SignedTask& signed_task) {
  auto started = std::chrono::steady_clock::now();
  v1::UpdateHeader header;
  header.set_protocol_version(kProtocolVersion);
  header.set_device_id(config_.device_id);
  header.set_job_id(task.job_id());
  header.set_round(task.round());
  v1::MetricsReport report;
  report.set_protocol_version(kProtocolVersion);
  report.set_device_id(config_.device_id);
  report.set_job_id(task.job_id());
  report.set_round(task.round());

  // Anything that makes the task impossible is reported back, so the round does not wait for us.
  auto decline = [&](const Status& why) -> Status { return Decline(task, why); };

  StatusOr<ModelLayout> layout = LayoutFor(task.model());
  if (!layout.ok()) return decline(layout.status());
  // The coordinator is trusted no more than the network: validate the model it sent.
  StatusOr<std::vector<TensorView>> params = DecodeParameters(task.parameters(), *layout);
  if (!params.ok()) return decline(Status(params.status().code(), "global model rejected: " +
                                                                     params.status().message()));
  OfferToControl(task, signed_task, *layout, *params);
  if (task.dataset() == hooks_.buffer_dataset) RefreshBufferData();
  auto it = data_.find(task.dataset());
  if (it == data_.end()) {
    return decline(FailedPrecondition("this device holds no dataset '" + task.dataset() + "'"));
  }
  const LocalData& d = it->second;

  if (task.kind() == v1::Task::TRAIN) {
    if (d.train.rows == 0) return decline(FailedPrecondition("no training data"));
    if (task.has_secagg()) return TrainSecurely(task, *layout, *params, d, header, decline);
    if (!config_.allow_plain_rounds) {
      return decline(FailedPrecondition(
          "refusing a plain training round: job " + task.job_id() +
          " has secure aggregation off, and this device sends its update only masked (its "
          "config's allow_plain_rounds: true would allow it)"));
    }
    StatusOr<TrainResult> r = Train(task, *layout, *params, d);
    if (!r.ok()) return decline(r.status());
    header.set_num_examples(r->num_examples);
    header.set_train_loss(r->train_loss);
    header.set_val_loss(r->val_loss);
    header.set_val_accuracy(r->val_accuracy);
    std::string payload = EncodeParameters(*layout, r->params.data());
    MaybeFault("upload");
    RETURN_IF_ERROR(SendUpdate(header, payload));
    FLEET_LOG(Info) << "job " << task.job_id() << " round " << task.round() << ": trained on "
                    << r->num_examples << " examples, loss " << r->train_loss << ", val_acc "
                    << r->val_accuracy << " ("
                    << std::chrono::duration<double>(std::chrono::steady_clock::now() - started)
                           .count()
                    << " s)";
    return OkStatus();
  }
  if (task.kind() == v1::Task::EVALUATE) {
    if (d.eval.rows == 0) return decline(FailedPrecondition("no evaluation data"));
    StatusOr<EvalResult> r = EvaluateModel(task.model(), *params, d.eval);
    if (!r.ok()) return decline(r.status());
    report.set_num_examples(r->num_examples);
    report.set_loss(r->loss);
    report.set_accuracy(r->accuracy);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ReportMetricsResponse resp;
    grpc::Status s = Stub()->ReportMetrics(&ctx, report, &resp);
    if (!s.ok()) return FromGrpcStatus(s);
    FLEET_LOG(Info) << "job " << task.job_id() << " round " << task.round() << ": evaluated "
                    << r->num_examples << " examples, accuracy " << r->accuracy;
    return OkStatus();
  }
  return InvalidArgument("unknown task kind " + std::to_string(task.kind()));
}

// A connection lost mid-upload is retried (the round is still open, and the coordinator counts
// nothing from a truncated stream); ALREADY_EXISTS on a retry means an earlier try did arrive,
// unless it says the earlier stream is still open: the coordinator has not seen that connection
// die yet and ends the stream at its idle bound (stream_idle_timeout_s), so that refusal is
// retried for up to two minutes, or until the round stops taking updates.
Status ClientRunner::SendUpdate(const v1::UpdateHeader& header, const std::string& payload) {
  Backoff backoff(std::chrono::milliseconds(500), std::chrono::seconds(4));
  Status s;
  int failures = 0;  // transient network failures
  std::optional<std::chrono::steady_clock::time_point> open_since;
  for (int attempt = 1;; ++attempt) {
    s = SendUpdateOnce(header, payload);
    const bool still_open = s.code() == StatusCode::kAlreadyExists &&
                            s.message().find(kUploadOpenReason) != std::string::npos;
    if (attempt > 1 && s.code() == StatusCode::kAlreadyExists && !still_open) return OkStatus();
    if (still_open) {
      const auto now = std::chrono::steady_clock::now();
      if (!open_since) open_since = now;
      if (now - *open_since > std::chrono::minutes(2)) return s;
    } else {
      const bool transient =
          s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kDeadlineExceeded;
      if (!transient || ++failures == 4) return s;
    }
    FLEET_LOG(Warn) << "job " << header.job_id() << " round " << header.round()
                    << ": update not delivered (" << s.message() << "); retrying";
    if (!SleepUnlessStopped(backoff.Next())) return s;
  }
}

Status ClientRunner::SendUpdateOnce(const v1::UpdateHeader& header, const std::string& payload) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  SetContext(&ctx);
  grpc::Status s = PushUpdateChunks(Stub().get(), &ctx, header, payload,
                                    size_t{config_.chunk_kb} * 1024);
  SetContext(nullptr);
  return FromGrpcStatus(s);
}

namespace {
const char* StepName(const v1::SecAggRequest& r) {
  switch (r.step_case()) {
    case v1::SecAggRequest::kAdvertise: return "advertise";
    case v1::SecAggRequest::kShareKeys: return "share_keys";
    case v1::SecAggRequest::kAwaitSurvivors: return "await_survivors";
    case v1::SecAggRequest::kConsistency: return "consistency";
    case v1::SecAggRequest::kUnmask: return "unmask";
    default: return "none";
  }
}
}  // namespace

Status ClientRunner::MaySecurelyAggregate(const std::string& job_id,
                                          const std::string& model_hash) const {
  if (!unmask_history_) {
    return FailedPrecondition("refusing secure aggregation: " + unmask_history_error_.message());
  }
  if (std::optional<std::string> earlier = unmask_history_->JobThatRevealed(model_hash)) {
    return FailedPrecondition(
        "refusing secure aggregation: this device already helped reveal a sum over this model "
        "(job " +
        *earlier + (*earlier == job_id ? "" : ", asked again by job " + job_id) + ", model " +
        model_hash.substr(0, 12) + ")");
  }
  return OkStatus();
}

namespace {
// Test-only corrupt device (ClientConfig::fault_corrupt_input): half the ring added to
// coordinate 0 of the packed little-endian words.
void CorruptFirstWord(std::string* words, uint32_t modulus_bits) {
  const size_t n = modulus_bits / 8;
  if (words->size() < n) return;
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint64_t{static_cast<uint8_t>((*words)[i])} << (8 * i);
  v += uint64_t{1} << (modulus_bits - 1);
  for (size_t i = 0; i < n; ++i) (*words)[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
}  // namespace

void ClientRunner::MaybeFault(const std::string& step) {
  if (!config_.fault_exit_before.empty() && config_.fault_exit_before == step) {
    FLEET_LOG(Warn) << "fault injection: exiting before " << step;
    std::_Exit(3);
  }
  if (!config_.fault_hang_before.empty() && config_.fault_hang_before == step) {
    FLEET_LOG(Warn) << "fault injection: hanging before " << step;
    while (SleepUnlessStopped(std::chrono::seconds(1))) {
    }
  }
}

StatusOr<v1::SecAggResponse> ClientRunner::SecAggStep(const v1::Task& task,
                                                     v1::SecAggRequest request,
                                                     std::chrono::milliseconds timeout) {
  MaybeFault(StepName(request));
  request.set_protocol_version(kProtocolVersion);
  request.set_device_id(config_.device_id);
  request.set_job_id(task.job_id());
  request.set_round(task.round());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  SetContext(&ctx);
  v1::SecAggResponse resp;
  grpc::Status s = Stub()->SecAgg(&ctx, request, &resp);
  SetContext(nullptr);
  if (!s.ok()) return FromGrpcStatus(s);
  return resp;
}

Status ClientRunner::TrainSecurely(const v1::Task& task, const ModelLayout& layout,
                                   const std::vector<TensorView>& global, const LocalData& d,
                                   v1::UpdateHeader header,
                                   const std::function<Status(const Status&)>& decline) {
  auto started = std::chrono::steady_clock::now();
  const v1::SecAggTaskConfig& cfg = task.secagg();
  QuantizationSpec quant{cfg.clip(), cfg.value_bits(), cfg.max_weight(), cfg.modulus_bits()};
  RETURN_IF_ERROR(ValidateQuantization(quant));
  // One secure sum per model version and device: a second one over nearly the same update
  // would let the two sums be subtracted (client/unmask_history.h).
  const std::string model_hash = ModelVersionHash(task.parameters());
  if (Status may = MaySecurelyAggregate(task.job_id(), model_hash); !may.ok()) {
    return decline(may);
  }
  const size_t length = layout.total + kSecAggExtraElements;
  const crypto::SigningKey* signing_key = SecAggSigningKey();
  if (signing_key == nullptr) {
    return decline(FailedPrecondition(
        "this device has no certified secure-aggregation signing key yet (" +
        (creds_ ? creds_->secagg_missing : std::string("no certificate")) + "; renewing)"));
  }
  // Messages of one attempt must never be reused in another: a coordinator that repeats an
  // attempt nonce is refused.
  if (Status fresh = attempt_nonces_.Use(cfg.attempt_nonce()); !fresh.ok()) return decline(fresh);
  SecAggClient::Options options{task.job_id(), task.round(), config_.device_id, cfg, length};
  options.verifier = config_.tls.insecure ? nullptr : verifier_.get();
  options.now = Now();
  SecAggClient sc(std::move(options), signing_key);
  // Stages answer when every client has spoken; allow for the coordinator's own deadline. The
  // survivor set comes only after everyone's training.
  const auto stage_wait = std::chrono::milliseconds(2 * cfg.stage_timeout_ms() + 10000);
  const auto input_wait =
      std::chrono::milliseconds(cfg.round_deadline_ms() + 2 * cfg.stage_timeout_ms() + 10000);

  TrainResult trained;
  SecAggTransport transport;
  transport.step = [&](v1::SecAggRequest req) -> StatusOr<v1::SecAggResponse> {
    if (req.has_unmask()) {
      // Durable before any share leaves: after a crash the device still knows it took part.
      Status r = unmask_history_->Record(task.job_id(), model_hash, task.round(),
                                         std::chrono::duration_cast<std::chrono::milliseconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
      if (!r.ok()) {
        return FailedPrecondition("unmask shares not sent: cannot record them durably: " +
                                  r.message());
      }
    }
    const auto timeout = req.has_await_survivors() ? input_wait : stage_wait;
    return SecAggStep(task, std::move(req), timeout);
  };
  transport.input = [&]() -> StatusOr<std::string> {
    StatusOr<TrainResult> r = Train(task, layout, global, d);
    if (!r.ok()) return decline(r.status());
    trained = std::move(r).value();
    std::vector<float> delta = Flatten(global, layout);
    for (size_t i = 0; i < delta.size(); ++i) delta[i] = trained.params[i] - delta[i];
    // The trained parameters give the update away as well as the delta does: wiped too.
    sodium_memzero(trained.params.data(), trained.params.size() * sizeof(float));
    crypto::Secret32 rounding_seed;
    randombytes_buf(rounding_seed.data(), rounding_seed.size());
    StatusOr<std::string> words =
        QuantizeToWords(delta.data(), delta.size(), trained.num_examples, trained.train_loss,
                        trained.val_accuracy, quant, rounding_seed);
    sodium_memzero(delta.data(), delta.size() * sizeof(float));
    if (!words.ok()) return decline(words.status());
    if (config_.fault_corrupt_input) {
      FLEET_LOG(Warn) << "fault injection: corrupting coordinate 0 of the quantized input";
      CorruptFirstWord(&words.value(), quant.modulus_bits);
    }
    return words;
  };
  transport.send_masked = [&](const std::string& masked) {
    header.set_masked(true);
    MaybeFault("masked_input");
    return SendUpdate(header, masked);
  };
  RETURN_IF_ERROR(RunSecAggClient(&sc, transport));
  FLEET_LOG(Info) << "job " << task.job_id() << " round " << task.round() << ": trained on "
                  << trained.num_examples << " examples, loss " << trained.train_loss
                  << ", val_acc " << trained.val_accuracy
                  << "; update securely aggregated as client " << sc.index() << " ("
                  << std::chrono::duration<double>(std::chrono::steady_clock::now() - started)
                         .count()
                  << " s)";
  return OkStatus();
}

}  // namespace fleet
