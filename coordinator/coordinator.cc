#include "coordinator/coordinator.h"

#include "common/clock.h"
#include "common/config.h"
#include "common/file_util.h"
#include "common/job_spec.h"
#include "common/log.h"
#include "crypto/enroll_token.h"
#include "crypto/random.h"

namespace fleet {

StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(CoordinatorOptions options) {
  if (!crypto::Init()) return Internal("libsodium failed to initialize");
  RETURN_IF_ERROR(MakePrivateDir(options.state_dir));
  const PkiPaths pki(options.state_dir);
  // Before anything writes: a crash may have left temporaries (some holding key material).
  RemoveStaleTempFiles(options.state_dir);
  RemoveStaleTempFiles(pki.dir);
  ASSIGN_OR_RETURN(std::unique_ptr<JobStore> store,
                   OpenSqliteStore(options.state_dir + "/coordinator.db"));
  std::unique_ptr<Coordinator> c(new Coordinator(std::move(options), std::move(store)));
  ASSIGN_OR_RETURN(c->audit_, OpenAuditTrail(c->options_.state_dir, c->store_.get()));
  const bool separate_ca = !c->options_.ca_endpoint.empty();
  if (separate_ca && FileExists(pki.ca_key)) {
    return FailedPrecondition(pki.ca_key +
                              " exists, but this coordinator was started with a "
                              "separate CA (" +
                              c->options_.ca_endpoint +
                              "): a coordinator of a separate CA must not hold the CA key; "
                              "move it to the CA's host");
  }
  if (!c->options_.insecure || FileExists(pki.ca_key) || separate_ca) {
    StatusOr<std::unique_ptr<Authority>> a =
        Authority::Load(c->options_.state_dir, /*ca_key=*/!separate_ca);
    if (!a.ok()) {
      return Status(a.status().code(),
                    a.status().message() + " (run `fleet-coordinator init --state-dir " +
                        c->options_.state_dir + "` once to create the fleet PKI" +
                        (separate_ca ? ", or `fleet-coordinator ca init ... "
                                       "--coordinator-state-dir " +
                                           c->options_.state_dir + "` for a separate CA)"
                                     : ")"));
    }
    c->authority_ = std::move(a).value();
  } else {
    FLEET_LOG(Warn) << "no PKI in " << pki.dir << ": models are sent UNSIGNED (--insecure)";
  }
  const int64_t offset = c->options_.clock_offset_s;
  auto now = [offset] { return UnixMillis() / 1000 + offset; };
  c->certs_ = std::make_unique<DeviceCertificates>(c->store_.get());
  RETURN_IF_ERROR(c->certs_->Load());
  c->access_ = std::make_unique<AccessControl>(c->store_.get(), c->audit_.get(), c->certs_.get(),
                                               c->options_.insecure, now);
  RETURN_IF_ERROR(c->access_->Load());
  c->refusals_ = std::make_unique<RefusalLog>(c->audit_.get(), c->options_.enroll_audit_interval);
  if (separate_ca) {
    c->registrar_ = ConnectRegistrar(c->options_.ca_endpoint, c->options_.ca_tls);
    FLEET_LOG(Info) << "certificates and tokens are managed by the CA at "
                    << c->options_.ca_endpoint << " (this coordinator holds no CA key)";
  } else if (c->authority_ && c->authority_->can_issue()) {
    RegistrarOptions ro;
    ro.device_cert_lifetime_s = c->options_.device_cert_lifetime_s;
    ro.now = now;
    ASSIGN_OR_RETURN(
        c->registrar_,
        LocalRegistrar::Create(c->authority_.get(), c->store_.get(), c->audit_.get(),
                               c->certs_.get(), c->refusals_.get(), pki.token_key, std::move(ro)));
  }
  RETURN_IF_ERROR(c->Recover());
  return c;
}

int64_t Coordinator::Now() const { return access_->now(); }

bool Coordinator::Probe() {
  ListJobs();
  registry_.List();
  return true;
}

Registrar* Coordinator::RegistrarOrError(Status* error) {
  if (!registrar_) {
    *error = FailedPrecondition(
        "this coordinator has no PKI (--insecure): it issues no "
        "certificates and keeps no bootstrap tokens");
  }
  return registrar_.get();
}

StatusOr<v1::EnrollResponse> Coordinator::Answer(const std::string& device_id,
                                                 const v1::CaIssueResponse& issued,
                                                 const char* event, const std::string& renewing) {
  if (registrar_->remote()) {
    // The CA recorded the certificate as the id's current one; so does this coordinator, for
    // the per-call check, and it records what it relayed (fail closed: not handed out).
    DeviceCertificates::Previous previous;
    RETURN_IF_ERROR(
        certs_->Record(device_id, issued.serial(), issued.not_after_unix(), Now(), &previous));
    nlohmann::json fields = {{"device_id", device_id},
                             {"serial", issued.serial()},
                             {"not_after", issued.not_after_unix()},
                             {"ca", options_.ca_endpoint}};
    if (!renewing.empty()) fields["replaces"] = renewing;
    Status audited = audit_->Append(event, device_id, std::move(fields));
    if (!audited.ok()) {
      (void)certs_->Restore(device_id, previous);
      return Unavailable(std::string(event) + " of device '" + device_id +
                         "' not completed: the audit record cannot be written (" +
                         audited.message() +
                         "); the certificate the CA issued was not handed "
                         "out (`fleetctl device reset " +
                         device_id + "` lets it enroll again)");
    }
  }
  v1::EnrollResponse resp;
  resp.set_certificate_pem(issued.certificate_pem());
  resp.set_ca_certificate_pem(authority_->ca_pem());
  resp.set_model_signing_public_key(crypto::ToString(authority_->model_key().public_key()));
  resp.set_not_after_unix(issued.not_after_unix());
  return resp;
}

StatusOr<v1::EnrollResponse> Coordinator::Enroll(const v1::EnrollRequest& req,
                                                 const std::string& peer) {
  const std::string& id = req.device_id();
  const std::string token_id = crypto::IsTokenId(req.token_id()) ? req.token_id() : "";
  auto refuse = [&](const char* reason, Status why) {
    refusals_->Refused(reason, peer, Utf8Prefix(id, 128), token_id);
    return why;
  };
  if (Status valid = ValidateDeviceId(id); !valid.ok()) return refuse("bad device id", valid);
  Status no_registrar;
  Registrar* registrar = RegistrarOrError(&no_registrar);
  if (registrar == nullptr) return no_registrar;
  // While the audit log refuses records no enrollment can complete: say so before a token use
  // is spent on it (the device retries).
  if (Status ready = audit_->Ready(); !ready.ok()) {
    return Unavailable("enrollment is suspended: " + ready.message());
  }
  if (access_->IsRevoked(id)) {
    return refuse("device revoked", PermissionDenied("device '" + id +
                                                     "' was revoked and cannot enroll again "
                                                     "under that id"));
  }
  // The registrar checks again (it does not trust its caller); this spares it the obvious.
  if (StatusOr<crypto::CsrInfo> csr = Authority::CheckCsrFor(id, req.csr_pem()); !csr.ok()) {
    return refuse(csr.status().code() == StatusCode::kPermissionDenied ? "CSR names another device"
                                                                       : "bad CSR",
                  csr.status());
  }
  v1::CaEnrollRequest ca;
  ca.set_protocol_version(kProtocolVersion);
  ca.set_device_id(id);
  ca.set_csr_pem(req.csr_pem());
  ca.set_token_id(req.token_id());
  ca.set_token_proof(req.token_proof());
  ca.set_peer(peer);
  ASSIGN_OR_RETURN(v1::CaIssueResponse issued, registrar->Enroll(ca));
  return Answer(id, issued, "enroll", "");
}

StatusOr<v1::EnrollResponse> Coordinator::Renew(const v1::RenewRequest& req,
                                                const std::string& certificate_pem) {
  Status no_registrar;
  Registrar* registrar = RegistrarOrError(&no_registrar);
  if (registrar == nullptr) return no_registrar;
  if (certificate_pem.empty()) {
    return FailedPrecondition("Renew needs the device's current certificate (mutual TLS)");
  }
  ASSIGN_OR_RETURN(crypto::CsrInfo csr, Authority::CheckCsrFor(req.device_id(), req.csr_pem()));
  ASSIGN_OR_RETURN(crypto::CertInfo current, crypto::ParseCertificate(certificate_pem));
  v1::CaRenewRequest ca;
  ca.set_protocol_version(kProtocolVersion);
  ca.set_device_id(req.device_id());
  ca.set_csr_pem(req.csr_pem());
  ca.set_current_certificate_pem(certificate_pem);
  ca.set_possession_signature(req.possession_signature());
  ASSIGN_OR_RETURN(v1::CaIssueResponse issued, registrar->Renew(ca));
  return Answer(req.device_id(), issued, "renew", current.serial);
}

StatusOr<std::pair<std::string, v1::TokenInfo>> Coordinator::CreateToken(const TokenSpec& spec,
                                                                         const std::string& by) {
  Status error;
  Registrar* registrar = RegistrarOrError(&error);
  if (registrar == nullptr) return error;
  return registrar->CreateToken(spec, by);
}

StatusOr<std::vector<v1::TokenInfo>> Coordinator::ListTokens() {
  Status error;
  Registrar* registrar = RegistrarOrError(&error);
  if (registrar == nullptr) return error;
  return registrar->ListTokens();
}

StatusOr<v1::TokenInfo> Coordinator::RevokeToken(const std::string& id, const std::string& by) {
  Status error;
  Registrar* registrar = RegistrarOrError(&error);
  if (registrar == nullptr) return error;
  return registrar->RevokeToken(id, by);
}

StatusOr<uint32_t> Coordinator::RevokeDevice(const std::string& id, const std::string& by) {
  RETURN_IF_ERROR(ValidateDeviceId(id));
  ASSIGN_OR_RETURN(uint32_t closed, access_->RevokeDevice(id, by));
  registry_.Revoke(id);
  // Fail safe: the revocation is in force whether or not it can be recorded; the admin is told
  // when it is not on record (revoking again records it once the log works).
  Status audited =
      audit_->Append("device_revoke", by, {{"device_id", id}, {"closed_calls", closed}});
  if (!audited.ok()) {
    return Internal("device '" + id +
                    "' is revoked (in force now), but the revocation is NOT in "
                    "the audit log: " +
                    audited.message());
  }
  return closed;
}

StatusOr<v1::ResetDeviceResponse> Coordinator::ResetDevice(const std::string& id,
                                                           const std::string& by) {
  RETURN_IF_ERROR(ValidateDeviceId(id));
  Status no_registrar;
  Registrar* registrar = RegistrarOrError(&no_registrar);
  if (registrar == nullptr) return no_registrar;
  if (access_->IsRevoked(id)) {
    return FailedPrecondition("device '" + id +
                              "' is revoked: a reset does not lift a revocation (the id stays "
                              "barred; re-provision the device under a new id)");
  }
  if (Status ready = audit_->Ready(); !ready.ok()) {
    return Unavailable("device '" + id + "' not reset: " + ready.message());
  }
  // The registrar's record decides who may enroll (audited there, failing closed).
  ASSIGN_OR_RETURN(v1::ResetDeviceResponse resp, registrar->ResetDevice(id, by));
  if (registrar->remote()) {
    DeviceCertificates::Previous previous;
    RETURN_IF_ERROR(certs_->Reset(id, Now(), &previous));
    Status audited = audit_->Append("device_reset", by,
                                    {{"device_id", id},
                                     {"forgotten_serial", resp.forgotten_serial()},
                                     {"ca", options_.ca_endpoint}});
    if (!audited.ok()) {
      return Internal("device '" + id +
                      "' is reset (at the CA and here), but the reset is NOT in this "
                      "coordinator's audit log: " +
                      audited.message());
    }
  }
  resp.set_closed_calls(access_->CancelCalls(id));
  registry_.Disconnect(id);
  FLEET_LOG(Warn) << "device " << id << " reset by " << by << ": certificate "
                  << (resp.forgotten_serial().empty() ? "(none)" : resp.forgotten_serial())
                  << " no longer accepted, " << resp.closed_calls() << " open calls closed";
  return resp;
}

Coordinator::Coordinator(CoordinatorOptions options, std::unique_ptr<JobStore> store)
    : options_(std::move(options)),
      store_(std::move(store)),
      registry_(options_.offline_after),
      upload_slots_(std::max<uint32_t>(1, options_.max_concurrent_updates)) {}

Coordinator::~Coordinator() {
  Shutdown();
  // Join the runners outside mu_ (their threads may still call back into competing_jobs).
  std::map<std::string, std::unique_ptr<JobRunner>> runners;
  {
    std::lock_guard<std::mutex> lock(mu_);
    runners.swap(runners_);
  }
  runners.clear();
}

RunnerOptions Coordinator::RunnerOptionsFor(const std::string& job_id, bool resume) {
  RunnerOptions ro;
  ro.checkpoint_dir = options_.state_dir + "/checkpoints/" + job_id;
  ro.model_key = authority_ ? &authority_->model_key() : nullptr;
  ro.audit = audit_.get();
  ro.resume = resume;
  ro.competing_jobs = [this](const std::string& dataset) {
    std::lock_guard<std::mutex> lock(mu_);
    uint32_t n = 0;
    for (const auto& [id, r] : runners_) {
      if (r->dataset() == dataset && !r->Finished()) ++n;
    }
    return n;
  };
  return ro;
}

// Unfinished jobs continue from their last committed round; runners start once the whole
// coordinator is up (StartRecovered), so no round begins before the services are listening.
Status Coordinator::Recover() {
  ASSIGN_OR_RETURN(std::vector<v1::DeviceStatus> devices, store_->LoadDevices());
  registry_.Restore(devices);
  ASSIGN_OR_RETURN(std::vector<v1::JobStatus> jobs, store_->LoadJobs());
  size_t resumed = 0;
  for (auto& job : jobs) {
    auto s = job.state();
    if (s != v1::JobStatus::PENDING && s != v1::JobStatus::RUNNING) {
      finished_[job.id()] = std::move(job);
      continue;
    }
    const std::string id = job.id();
    StatusOr<std::unique_ptr<JobRunner>> runner = JobRunner::Create(
        std::move(job), &registry_, store_.get(), RunnerOptionsFor(id, /*resume=*/true),
        [this] { NotifyChanged(); });
    if (!runner.ok()) {
      return Status(runner.status().code(),
                    "cannot resume job " + id + ": " + runner.status().message());
    }
    // The round it starts from tells a reader of the log which recorded rounds were not
    // committed before the restart (they run again).
    RETURN_IF_ERROR(audit_->Append(
        "job_resume", "coordinator",
        {{"job_id", id}, {"from_round", (*runner)->Snapshot().resumed_from_round()}}));
    runners_[id] = std::move(runner).value();
    ++resumed;
  }
  if (!jobs.empty()) {
    FLEET_LOG(Info) << "loaded " << jobs.size() << " jobs from the state database, " << resumed
                    << " to resume";
  }
  return OkStatus();
}

void Coordinator::StartRecovered() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, runner] : runners_) {
    if (!runner->Started()) runner->Start();
  }
}

void Coordinator::NotifyChanged() {
  std::lock_guard<std::mutex> lock(change_mu_);
  ++version_;
  change_cv_.notify_all();
}

void Coordinator::WaitForChange(uint64_t* version, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(change_mu_);
  change_cv_.wait_for(lock, timeout, [&] { return version_ != *version; });
  *version = version_;
}

namespace {
// Text a device reports that the coordinator stores and shows (fleetctl device list, logs):
// bounded, and free of control characters (C0, DEL, C1) that could forge lines or drive an
// admin's terminal. Proto3 parsing already guarantees UTF-8.
Status CheckDeviceText(const std::string& what, const std::string& value, size_t max,
                       bool may_be_empty = true) {
  if (value.empty() && !may_be_empty) return InvalidArgument(what + " is empty");
  if (value.size() > max) {
    return InvalidArgument(what + " is " + std::to_string(value.size()) + " bytes (max " +
                           std::to_string(max) + ")");
  }
  if (EscapeForLog(value) != value || value.find('\\') != std::string::npos) {
    return InvalidArgument(what + " contains control characters or backslashes: '" +
                           EscapeForLog(value.substr(0, 64)) + "'");
  }
  return OkStatus();
}

Status CheckJoinText(const v1::JoinRequest& request) {
  RETURN_IF_ERROR(CheckDeviceText("software_version", request.software_version(), 128));
  if (request.datasets_size() > 64) return InvalidArgument("too many datasets (max 64)");
  for (const v1::DatasetInfo& d : request.datasets()) {
    RETURN_IF_ERROR(CheckDeviceText("dataset name", d.name(), 128, /*may_be_empty=*/false));
  }
  if (request.labels_size() > 64) return InvalidArgument("too many labels (max 64)");
  for (const auto& [key, value] : request.labels()) {
    RETURN_IF_ERROR(CheckDeviceText("label key", key, 64, /*may_be_empty=*/false));
    RETURN_IF_ERROR(CheckDeviceText("label '" + key + "'", value, 256));
  }
  return OkStatus();
}
}  // namespace

Status Coordinator::Join(const v1::JoinRequest& request, const std::string& certificate_pem) {
  const std::string& id = request.device_id();
  RETURN_IF_ERROR(ValidateDeviceId(id));
  Status text = CheckJoinText(request);
  if (!text.ok()) return InvalidArgument("Join of device '" + id + "': " + text.message());
  if (!request.signing_public_key().empty() && request.signing_public_key().size() != 32) {
    return InvalidArgument("signing_public_key must be 32 bytes (Ed25519)");
  }
  std::string certificate_der;
  if (access_->insecure()) {
    std::string old_key = registry_.SigningKey(id);
    if (!old_key.empty() && old_key != request.signing_public_key()) {
      // Without certificates a device key is trusted on first use; a change is worth an
      // operator's attention.
      FLEET_LOG(Warn) << "device " << id << " re-joined with a different signing key";
    }
  } else {
    // The fleet CA certified the key in the certificate this call came with; nobody else can
    // register a key for the device, and a new key comes only with a new certificate.
    StatusOr<crypto::CertInfo> cert = crypto::ParseCertificate(certificate_pem);
    if (!cert.ok()) {
      return Unauthenticated("Join without a readable client certificate: " +
                             cert.status().message());
    }
    // A Join without a key registers none: the device is then never selected for secure rounds.
    if (!request.signing_public_key().empty() &&
        request.signing_public_key() != cert->secagg_public_key) {
      Status refused = PermissionDenied(
          "Join of device '" + id + "' carries a SecAgg signing key that its certificate " +
          cert->serial + " does not certify (it certifies " +
          (cert->secagg_public_key.empty() ? "none" : "another one") +
          "): a new signing key needs a new certificate (Renew or re-enrollment)");
      FLEET_LOG(Warn) << "refused Join: " << refused.message();
      return refused;
    }
    ASSIGN_OR_RETURN(certificate_der, crypto::CertificateDer(certificate_pem));
  }
  v1::DeviceStatus status = registry_.Join(request, std::move(certificate_der));
  Status s = store_->SaveDevice(status);
  if (!s.ok()) FLEET_LOG(Error) << "cannot persist device " << id << ": " << s.message();
  FLEET_LOG(Info) << "device " << id << " joined (" << request.datasets_size() << " datasets, "
                  << request.software_version() << ")";
  return OkStatus();
}

JobRunner* Coordinator::FindRunner(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = runners_.find(id);
  return it == runners_.end() ? nullptr : it->second.get();
}

StatusOr<size_t> Coordinator::MaxUpdateBytes(const std::string& job_id) {
  JobRunner* r = FindRunner(job_id);
  if (r == nullptr) return NotFound("no running job " + job_id);
  return r->max_update_bytes();
}

Status Coordinator::AdmitUpload(const v1::UpdateHeader& header,
                                std::chrono::steady_clock::time_point* until) {
  JobRunner* r = FindRunner(header.job_id());
  if (r == nullptr) return NotFound("no running job " + header.job_id());
  return r->AdmitUpload(header, until);
}

Status Coordinator::OnUpdate(const v1::UpdateHeader& header, std::string_view payload) {
  JobRunner* r = FindRunner(header.job_id());
  if (r == nullptr) return NotFound("no running job " + header.job_id());
  return r->OnUpdate(header, payload);
}

void Coordinator::OnSecAgg(const v1::SecAggRequest& request, JobRunner::SecAggReply reply) {
  JobRunner* r = FindRunner(request.job_id());
  if (r == nullptr) return reply(NotFound("no running job " + request.job_id()));
  r->OnSecAgg(request, std::move(reply));
}

Status Coordinator::OnMetrics(const v1::MetricsReport& report) {
  JobRunner* r = FindRunner(report.job_id());
  if (r == nullptr) return NotFound("no running job " + report.job_id());
  return r->OnMetrics(report);
}

StatusOr<v1::JobStatus> Coordinator::SubmitJob(const v1::JobSpec& spec, const std::string& by) {
  Status valid = ValidateJobSpec(spec);
  if (!valid.ok()) return InvalidArgument("invalid job spec: " + valid.message());
  if (!spec.secure_aggregation().disabled()) {
    // Two secure sums over the same model with overlapping cohorts expose single devices'
    // updates (their difference), and a job with the same model and seed as an earlier one
    // starts from the very model that job revealed a sum over. Refused here, where the fix (a
    // new seed) is one key away; later rounds are guarded by the fleet-wide revealed_sums table.
    ASSIGN_OR_RETURN(std::string initial, InitialModelHash(spec));
    StatusOr<std::vector<v1::RevealedSum>> revealed = store_->LoadRevealedSums(initial);
    if (!revealed.ok()) {
      return Unavailable("job not created: cannot read the revealed secure sums (" +
                         revealed.status().message() + ")");
    }
    if (!revealed->empty()) {
      return FailedPrecondition(
          "job " + revealed->front().job_id() +
          " already revealed a secure sum over the model this job would start from (same model "
          "and seed " +
          std::to_string(spec.seed()) +
          "): a second sum over it would let the coordinator subtract single devices' updates; "
          "set `seed:` in the spec to a value no earlier job of this model used");
    }
  }
  v1::JobStatus job;
  job.set_id("job-" + crypto::RandomHex(6));
  *job.mutable_spec() = spec;
  job.set_state(v1::JobStatus::PENDING);
  job.set_created_unix_ms(UnixMillis());
  job.set_updated_unix_ms(job.created_unix_ms());
  // Fail closed: recorded before the job exists anywhere, so no job runs without its record.
  Status audited = audit_->Append("job_submit", by,
                                  {{"job_id", job.id()},
                                   {"name", spec.name()},
                                   {"dataset", spec.dataset()},
                                   {"rounds", spec.rounds()},
                                   {"secure_aggregation", !spec.secure_aggregation().disabled()}});
  if (!audited.ok()) {
    return Internal("job not created: its submission cannot be recorded in the audit log (" +
                    audited.message() + ")");
  }
  RETURN_IF_ERROR(store_->SaveJob(job));
  RunnerOptions ro = RunnerOptionsFor(job.id(), /*resume=*/false);
  ASSIGN_OR_RETURN(std::unique_ptr<JobRunner> runner,
                   JobRunner::Create(job, &registry_, store_.get(), ro,
                                     [this] { NotifyChanged(); }));
  JobRunner* raw = runner.get();
  {
    std::lock_guard<std::mutex> lock(mu_);
    runners_[job.id()] = std::move(runner);
  }
  raw->Start();
  FLEET_LOG(Info) << "job " << job.id() << " submitted: " << spec.name() << ", dataset "
                  << spec.dataset() << ", " << spec.rounds() << " rounds";
  NotifyChanged();
  return job;
}

StatusOr<v1::JobStatus> Coordinator::GetJob(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = runners_.find(id);
  if (it != runners_.end()) return it->second->Snapshot();
  auto f = finished_.find(id);
  if (f != finished_.end()) return f->second;
  return NotFound("no job with id '" + id + "'");
}

std::vector<v1::JobStatus> Coordinator::ListJobs() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::JobStatus> out;
  for (const auto& [id, job] : finished_) out.push_back(job);
  for (const auto& [id, runner] : runners_) out.push_back(runner->Snapshot());
  std::sort(out.begin(), out.end(), [](const v1::JobStatus& a, const v1::JobStatus& b) {
    return a.created_unix_ms() != b.created_unix_ms() ? a.created_unix_ms() < b.created_unix_ms()
                                                      : a.id() < b.id();
  });
  return out;
}

StatusOr<v1::JobStatus> Coordinator::StopJob(const std::string& id, const std::string& by) {
  JobRunner* r = FindRunner(id);
  if (r == nullptr) {
    ASSIGN_OR_RETURN(v1::JobStatus job, GetJob(id));
    return job;  // already finished: stopping is a no-op
  }
  FLEET_LOG(Info) << "job " << id << ": stop requested";
  r->Stop();
  // Fail safe, like a revocation: the job stops either way.
  Status audited = audit_->Append("job_stop", by, {{"job_id", id}});
  if (!audited.ok()) {
    return Internal("job " + id +
                    " is stopping, but the stop is NOT in the audit log: " + audited.message());
  }
  return r->Snapshot();
}

void Coordinator::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, r] : runners_) r->Halt();
  }
  registry_.WakeAll();
  NotifyChanged();
}

}  // namespace fleet
