#include "coordinator/services.h"

#include <google/protobuf/unknown_field_set.h>
#include <sodium.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "common/config.h"
#include "common/grpc_util.h"
#include "common/log.h"

namespace fleet {
namespace {

grpc::Status CheckVersion(uint32_t client_version) {
  if (client_version == kProtocolVersion) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                      "protocol version mismatch: client speaks v" +
                          std::to_string(client_version) + ", coordinator speaks v" +
                          std::to_string(kProtocolVersion));
}

grpc::Status NotJoined(const std::string& id) {
  return grpc::Status(grpc::StatusCode::NOT_FOUND,
                      "device '" + id + "' has not joined (or the coordinator restarted): Join first");
}

constexpr uint32_t kMaxLongPollMs = 30000;

// The client certificate (PEM) the TLS handshake verified; empty without TLS (--insecure).
std::string PeerCertificatePem(const grpc::ServerContextBase& ctx) {
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  if (!auth) return "";
  std::vector<grpc::string_ref> pem = auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  return pem.empty() ? "" : std::string(pem[0].data(), pem[0].size());
}

template <typename T>
grpc::Status Reply(StatusOr<T> r, T* out) {
  if (!r.ok()) return ToGrpcStatus(r.status());
  *out = std::move(r).value();
  return grpc::Status::OK;
}

}  // namespace

grpc::Status DeviceService::Join(grpc::ServerContext* ctx, const v1::JoinRequest* req,
                                 v1::JoinResponse* resp) {
  grpc::Status v = CheckVersion(req->protocol_version());
  if (!v.ok()) {
    FLEET_LOG(Warn) << "refused Join from '" << req->device_id() << "': " << v.error_message();
    return v;
  }
  if (grpc::Status a = Allow(*ctx, req->device_id()); !a.ok()) return a;
  grpc::Status s = ToGrpcStatus(c_->Join(*req, PeerCertificatePem(*ctx)));
  if (!s.ok()) return s;
  resp->set_protocol_version(kProtocolVersion);
  resp->set_heartbeat_interval_ms(
      static_cast<uint32_t>(c_->options().heartbeat_interval.count()));
  return grpc::Status::OK;
}

grpc::Status DeviceService::Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                                      v1::HeartbeatResponse*) {
  grpc::Status v = CheckVersion(req->protocol_version());
  if (!v.ok()) return v;
  if (grpc::Status a = Allow(*ctx, req->device_id()); !a.ok()) return a;
  if (!c_->registry().Touch(req->device_id(), req->busy(), &req->eligibility())) {
    return NotJoined(req->device_id());
  }
  return grpc::Status::OK;
}

namespace {

// The response bytes for `task` without copying them: the slice keeps the shared string alive.
grpc::ByteBuffer SharedBytes(DeviceRegistry::TaskBytes task) {
  auto* holder = new DeviceRegistry::TaskBytes(std::move(task));
  grpc::Slice slice(
      const_cast<char*>((*holder)->data()), (*holder)->size(),
      [](void* p) { delete static_cast<DeviceRegistry::TaskBytes*>(p); }, holder);
  return grpc::ByteBuffer(&slice, 1);
}

// An empty SignedTask: the long poll ended without a task (nothing to sign or verify).
const DeviceRegistry::TaskBytes& NoTask() {
  static const DeviceRegistry::TaskBytes none =
      std::make_shared<const std::string>(v1::SignedTask().SerializeAsString());
  return none;
}

}  // namespace

// One parked FetchTask, answered once by the registry.
class FetchReactor final : public grpc::ServerUnaryReactor {
 public:
  void Answer(DeviceRegistry::TaskBytes task, grpc::ByteBuffer* response) {
    *response = SharedBytes(task ? std::move(task) : NoTask());
    Finish(grpc::Status::OK);
  }
  void OnDone() override { delete this; }
};

grpc::ServerUnaryReactor* DeviceService::FetchTask(grpc::CallbackServerContext* ctx,
                                                   const grpc::ByteBuffer* request,
                                                   grpc::ByteBuffer* response) {
  auto* reactor = new FetchReactor;
  grpc::Status s = StartFetch(ctx, *request, reactor, response);
  if (!s.ok()) reactor->Finish(s);
  return reactor;
}

// Checks the request and parks it; on success the registry finishes the reactor later.
grpc::Status DeviceService::StartFetch(grpc::CallbackServerContext* ctx,
                                       const grpc::ByteBuffer& request, FetchReactor* reactor,
                                       grpc::ByteBuffer* response) {
  v1::FetchTaskRequest req;
  if (!ParseByteBuffer(request, &req)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "malformed FetchTaskRequest");
  }
  grpc::Status v = CheckVersion(req.protocol_version());
  if (!v.ok()) return v;
  if (grpc::Status a = Allow(*ctx, req.device_id()); !a.ok()) return a;
  // Revocation cancels the call while it is parked; the guard lives until the answer.
  auto guard = std::make_shared<AccessControl::CallGuard>(&c_->access(), req.device_id(), ctx);
  const uint32_t wait = std::min(req.wait_ms(), kMaxLongPollMs);
  bool parked = c_->registry().Park(
      req.device_id(), std::chrono::milliseconds(wait),
      [reactor, response, guard](DeviceRegistry::TaskBytes task) mutable {
        guard.reset();
        reactor->Answer(std::move(task), response);
      });
  if (!parked) return NotJoined(req.device_id());
  return grpc::Status::OK;
}

// Runs closures on a few threads of its own: the CPU work of validating and aggregating a
// complete update, kept off gRPC's callback threads (reactions must not block). Every queued
// closure holds an ingest slot, so the queue is bounded by them. The destructor runs what is
// queued, then joins.
class IngestWorkers {
 public:
  explicit IngestWorkers(int n) {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { Loop(); });
  }
  ~IngestWorkers() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  void Post(std::function<void()> work) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(work));
    }
    cv_.notify_one();
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      std::function<void()> work = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      try {
        work();
      } catch (const std::exception& e) {
        // A bug reachable by another party's bytes must not end the coordinator.
        FLEET_LOG(Error) << "request handler failed: " << e.what();
      }
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

DeviceService::DeviceService(Coordinator* c, StreamLimits limits)
    : c_(c), limits_(limits), workers_(std::make_unique<IngestWorkers>(2)) {}

DeviceService::~DeviceService() = default;

bool DeviceService::BeginUpload(const std::string& device) {
  std::lock_guard<std::mutex> lock(uploads_mu_);
  return uploading_.insert(device).second;
}

void DeviceService::EndUpload(const std::string& device) {
  std::lock_guard<std::mutex> lock(uploads_mu_);
  uploading_.erase(device);
}

// One PushUpdate stream. Nothing that can wait holds a thread:
//   kHeader     reading the first chunk (idle deadline);
//               then the checks: version, certificate, joined, size, the job's runner says the
//               device is selected and has not answered, and it has no other upload open;
//   kQueued     waiting for an ingest slot (no read outstanding: HTTP/2 flow control holds the
//               device back; only the total deadline runs);
//   kReading    reading chunks into the payload (idle and total deadline);
//   kProcessing the complete payload is validated and aggregated on an ingest worker;
//   kEnded      Finish was called; the slot and the device's upload entry are free.
// A refusal before kQueued never takes a slot, so devices that are not selected, have answered
// or already upload cannot hold one. Deadlines end the stream with DEADLINE_EXCEEDED and free its
// slot at once. Thread-safety: mu_ guards the phase and what it owns; OnReadDone runs one at a
// time (one read outstanding), the timer, OnCancel, the slot grant and the worker may run
// concurrently with it. Coordinator and service calls are made without mu_.
class UploadReactor final : public grpc::ServerReadReactor<v1::UpdateChunk> {
 public:
  using Clock = std::chrono::steady_clock;
  UploadReactor(DeviceService* service, grpc::CallbackServerContext* ctx,
                v1::PushUpdateResponse* response)
      : service_(service),
        c_(service->c_),
        ctx_(ctx),
        response_(response),
        limits_(service->limits_),
        started_(Clock::now()),
        last_activity_(started_),
        total_deadline_(started_ + limits_.upload) {}

  void Start() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      timer_ = service_->timer_.At(started_ + limits_.idle, [this] { return OnTimer(); });
    }
    StartRead(&chunk_);
  }

  void OnReadDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (phase_ == Phase::kEnded) return;
    if (phase_ == Phase::kHeader) {
      if (!ok || !chunk_.has_header()) {
        lock.unlock();
        return End(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "PushUpdate: the first chunk must carry the update header"));
      }
      header_ = chunk_.header();
      last_activity_ = Clock::now();
      lock.unlock();
      return Admit();
    }
    if (!ok) {  // the device finished sending (or went away: then nobody hears the answer)
      if (payload_.size() != header_.total_bytes()) {
        const std::string why = "update has " + std::to_string(payload_.size()) +
                                " bytes, header declared " + std::to_string(header_.total_bytes());
        lock.unlock();
        return End(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, why));
      }
      phase_ = Phase::kProcessing;
      auto payload = std::make_shared<std::string>(std::move(payload_));
      lock.unlock();
      service_->workers_->Post([this, payload] {
        grpc::Status s = ToGrpcStatus(c_->OnUpdate(header_, *payload));
        response_->set_accepted(s.ok());
        End(std::move(s), /*from_worker=*/true);
      });
      return;
    }
    if (!AppendLocked()) {
      lock.unlock();
      return End(TooLong());
    }
    last_activity_ = Clock::now();
    StartRead(&chunk_);
  }

  void OnCancel() override {
    End(grpc::Status(grpc::StatusCode::CANCELLED,
                     "upload cancelled (the device went away, was revoked, or the coordinator is "
                     "shutting down)"));
  }

  void OnDone() override {
    CallTimer::Id timer;
    {
      std::lock_guard<std::mutex> lock(mu_);
      timer = timer_;
    }
    service_->timer_.Cancel(timer);  // waits for a running OnTimer; it never runs again
    guard_.reset();
    delete this;
  }

 private:
  enum class Phase { kHeader, kQueued, kReading, kProcessing, kEnded };

  grpc::Status TooLong() const {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        "update is longer than its declared total_bytes " + std::to_string(header_.total_bytes()));
  }

  // Under mu_: adds the chunk just read; false when it would exceed the declared size.
  bool AppendLocked() {
    if (payload_.size() + chunk_.data().size() > header_.total_bytes()) return false;
    payload_.append(chunk_.data());
    return true;
  }

  // The header's checks, cheapest first; none of them takes a slot.
  void Admit() {
    const std::string& device = header_.device_id();
    if (grpc::Status v = CheckVersion(header_.protocol_version()); !v.ok()) return End(v);
    if (grpc::Status a = service_->Allow(*ctx_, device); !a.ok()) return End(a);
    // Revocation cancels the stream (OnCancel); the guard lives until OnDone.
    guard_ = std::make_unique<AccessControl::CallGuard>(&c_->access(), device, ctx_);
    if (!c_->registry().Touch(device, false)) return End(NotJoined(device));
    StatusOr<size_t> max = c_->MaxUpdateBytes(header_.job_id());
    if (!max.ok()) return End(ToGrpcStatus(max.status()));
    if (header_.total_bytes() > *max) {
      FLEET_LOG(Warn) << "job " << header_.job_id() << ": refused update from " << device << ": "
                      << header_.total_bytes() << " bytes exceeds the job's limit of " << *max;
      return End(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                              "update of " + std::to_string(header_.total_bytes()) +
                                  " bytes exceeds this job's limit of " + std::to_string(*max)));
    }
    Clock::time_point until;
    if (Status s = c_->AdmitUpload(header_, &until); !s.ok()) return End(ToGrpcStatus(s));
    if (!service_->BeginUpload(device)) {
      return End(grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                              "device " + device + " " + kUploadOpenReason + " (job " +
                                  header_.job_id() + " round " + std::to_string(header_.round()) +
                                  "): one at a time"));
    }
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (phase_ == Phase::kEnded) {  // a deadline or a cancellation came first
        lock.unlock();
        service_->EndUpload(device);
        return;
      }
      registered_ = true;
      total_deadline_ = std::min(total_deadline_, until);
      round_bound_ = until <= started_ + limits_.upload;
    }
    // A decline carries no payload: nothing to buffer, no slot needed.
    if (header_.total_bytes() == 0) return StartReading(/*slot=*/false);
    UploadSlots::Ticket ticket = 0;
    if (c_->upload_slots().Acquire([this] { StartReading(/*slot=*/true); }, &ticket)) {
      return StartReading(/*slot=*/true);
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (phase_ == Phase::kHeader) {  // not granted yet (the grant may come any moment)
      phase_ = Phase::kQueued;
      ticket_ = ticket;
    } else if (phase_ == Phase::kEnded) {
      lock.unlock();
      c_->upload_slots().CancelWait(ticket);  // a grant that raced with the end gives it back
    }
  }

  // The stream may read now (holding a slot when `slot`); also the slot grant callback.
  void StartReading(bool slot) {
    std::unique_lock<std::mutex> lock(mu_);
    if (phase_ == Phase::kEnded) {
      lock.unlock();
      if (slot) c_->upload_slots().Release();
      return;
    }
    has_slot_ = slot;
    phase_ = Phase::kReading;
    last_activity_ = Clock::now();
    if (!AppendLocked()) {  // the first chunk may carry data too
      lock.unlock();
      return End(TooLong());
    }
    StartRead(&chunk_);
  }

  CallTimer::Clock::time_point OnTimer() {
    std::unique_lock<std::mutex> lock(mu_);
    if (phase_ == Phase::kEnded) return CallTimer::kDone;
    if (phase_ == Phase::kProcessing) return CallTimer::kDone;  // bounded work; the worker ends it
    const auto now = Clock::now();
    const bool reading = phase_ == Phase::kHeader || phase_ == Phase::kReading;
    std::string why;
    if (now >= total_deadline_) {
      why = round_bound_ ? "round " + std::to_string(header_.round()) + " of job " +
                               header_.job_id() + " stopped taking updates before this one ended"
                         : "the upload took longer than the coordinator's limit of " +
                               std::to_string(limits_.upload.count()) + " s";
    } else if (reading && now - last_activity_ >= limits_.idle) {
      why = std::string(phase_ == Phase::kHeader ? "no update header" : "no data") + " for " +
            std::to_string(limits_.idle.count()) + " s (the coordinator's idle limit)";
    } else {
      return reading ? std::min(total_deadline_, last_activity_ + limits_.idle) : total_deadline_;
    }
    const std::string who = header_.device_id().empty() ? ctx_->peer() : header_.device_id();
    lock.unlock();
    FLEET_LOG(Warn) << "PushUpdate from " << who << " ended: " << why;
    End(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "PushUpdate ended: " + why));
    return CallTimer::kDone;
  }

  // Finishes the stream once, freeing its slot and its device's upload entry. While the worker
  // processes a complete update only the worker ends it.
  void End(grpc::Status status, bool from_worker = false) {
    UploadSlots::Ticket ticket = 0;
    bool release = false, unregister = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (phase_ == Phase::kEnded) return;
      if (phase_ == Phase::kProcessing && !from_worker) return;
      if (phase_ == Phase::kQueued) ticket = ticket_;
      phase_ = Phase::kEnded;
      release = std::exchange(has_slot_, false);
      unregister = std::exchange(registered_, false);
      std::string().swap(payload_);
    }
    // A grant racing with this end sees kEnded and hands the slot back itself.
    if (ticket != 0) c_->upload_slots().CancelWait(ticket);
    if (release) c_->upload_slots().Release();
    if (unregister) service_->EndUpload(header_.device_id());
    Finish(std::move(status));
  }

  DeviceService* const service_;
  Coordinator* const c_;
  grpc::CallbackServerContext* const ctx_;
  v1::PushUpdateResponse* const response_;
  const StreamLimits limits_;
  const Clock::time_point started_;
  v1::UpdateChunk chunk_;                            // the read in flight (one at a time)
  v1::UpdateHeader header_;                          // from the first chunk; fixed before Admit
  std::unique_ptr<AccessControl::CallGuard> guard_;  // set in Admit, reset in OnDone

  std::mutex mu_;
  Phase phase_ = Phase::kHeader;  // guarded by mu_, like everything below
  Clock::time_point last_activity_;
  Clock::time_point total_deadline_;
  bool round_bound_ = false;  // total_deadline_ is the round's, not limits_.upload
  CallTimer::Id timer_ = 0;
  UploadSlots::Ticket ticket_ = 0;
  bool has_slot_ = false;
  bool registered_ = false;  // holds the device's entry in DeviceService::uploading_
  std::string payload_;
};

grpc::ServerReadReactor<v1::UpdateChunk>* DeviceService::PushUpdate(
    grpc::CallbackServerContext* ctx, v1::PushUpdateResponse* response) {
  auto* reactor = new UploadReactor(this, ctx, response);
  reactor->Start();
  return reactor;
}

grpc::Status DeviceService::ReportMetrics(grpc::ServerContext* ctx, const v1::MetricsReport* req,
                                          v1::ReportMetricsResponse*) {
  grpc::Status v = CheckVersion(req->protocol_version());
  if (!v.ok()) return v;
  if (grpc::Status a = Allow(*ctx, req->device_id()); !a.ok()) return a;
  if (!c_->registry().Touch(req->device_id(), false)) return NotJoined(req->device_id());
  return ToGrpcStatus(c_->OnMetrics(*req));
}

grpc::ServerUnaryReactor* DeviceService::SecAgg(grpc::CallbackServerContext* ctx,
                                                const v1::SecAggRequest* req,
                                                v1::SecAggResponse* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  grpc::Status s = StartSecAgg(ctx, *req, reactor, resp);
  if (!s.ok()) reactor->Finish(s);
  return reactor;
}

// Checks the request and hands it to the job, which answers (finishes the reactor) when the
// step's stage closes.
grpc::Status DeviceService::StartSecAgg(grpc::CallbackServerContext* ctx,
                                        const v1::SecAggRequest& req,
                                        grpc::ServerUnaryReactor* reactor,
                                        v1::SecAggResponse* resp) {
  grpc::Status v = CheckVersion(req.protocol_version());
  if (!v.ok()) return v;
  if (grpc::Status a = Allow(*ctx, req.device_id()); !a.ok()) return a;
  if (!c_->registry().Touch(req.device_id(), true)) return NotJoined(req.device_id());
  // Revocation cancels the call while it waits; the guard lives until the answer.
  auto guard = std::make_shared<AccessControl::CallGuard>(&c_->access(), req.device_id(), ctx);
  c_->OnSecAgg(req, [reactor, resp, guard](StatusOr<v1::SecAggResponse> r) mutable {
    guard.reset();
    if (!r.ok()) return reactor->Finish(ToGrpcStatus(r.status()));
    *resp = std::move(r).value();
    reactor->Finish(grpc::Status::OK);
  });
  return grpc::Status::OK;
}

grpc::Status DeviceService::Renew(grpc::ServerContext* ctx, const v1::RenewRequest* req,
                                  v1::EnrollResponse* resp) {
  grpc::Status v = CheckVersion(req->protocol_version());
  if (!v.ok()) return v;
  if (grpc::Status a = Allow(*ctx, req->device_id()); !a.ok()) return a;
  return Reply(c_->Renew(*req, PeerCertificatePem(*ctx)), resp);
}

grpc::Status DeviceService::Allow(const grpc::ServerContextBase& ctx,
                                  const std::string& device_id) {
  Status s = ValidateDeviceId(device_id);
  if (s.ok()) s = c_->access().CheckDevice(ctx, device_id);
  if (s.ok()) return grpc::Status::OK;
  FLEET_LOG(Warn) << "refused device RPC for '" << Utf8Prefix(device_id, 128) << "' from "
                  << ctx.peer() << ": " << s.message();
  return ToGrpcStatus(s);
}

namespace {

// "ipv4:10.1.2.3:5678" -> "10.1.2.3", "ipv6:%5B::1%5D:5678" -> "%5B::1%5D": the peer's address
// without its scheme and port (each connection has another port).
std::string PeerHost(const std::string& peer) {
  const size_t scheme = peer.find(':');
  std::string p = scheme == std::string::npos ? peer : peer.substr(scheme + 1);
  const size_t colon = p.rfind(':');
  if (colon != std::string::npos && colon + 1 < p.size() &&
      p.find_first_not_of("0123456789", colon + 1) == std::string::npos) {
    p.resize(colon);
  }
  return p.substr(0, 64);
}

}  // namespace

EnrollmentService::EnrollmentService(Coordinator* c, EnrollLimits limits)
    : c_(c),
      limits_(limits),
      limiter_(limits.burst, limits.per_minute),
      workers_(std::make_unique<IngestWorkers>(2)) {}

EnrollmentService::~EnrollmentService() = default;

grpc::ServerUnaryReactor* EnrollmentService::Enroll(grpc::CallbackServerContext* ctx,
                                                    const grpc::ByteBuffer* request,
                                                    grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  const std::string peer = PeerHost(ctx->peer());
  auto busy = [&](const char* reason, std::chrono::milliseconds wait, const std::string& what) {
    c_->refusals().Refused(reason, peer, "");
    ctx->AddTrailingMetadata("fleet-retry-after-ms", std::to_string(wait.count()));
    const int64_t s = std::max<int64_t>(1, (wait.count() + 999) / 1000);
    reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 what + ": retry in " + std::to_string(s) + " s"));
    return reactor;
  };
  std::chrono::milliseconds wait{0};
  if (!limiter_.Allow(peer, &wait)) {
    return busy("rate limited", wait, "too many enrollment requests from " + peer);
  }
  const size_t bytes = request->Length();
  if (bytes > limits_.max_request_bytes) {
    c_->refusals().Refused("request too large", peer, "");
    FLEET_LOG(Warn) << "refused enrollment request of " << bytes << " bytes from " << ctx->peer();
    reactor->Finish(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        "enrollment request of " + std::to_string(bytes) + " bytes exceeds the limit of " +
            std::to_string(limits_.max_request_bytes) + " (refused unparsed)"));
    return reactor;
  }
  if (queued_.fetch_add(1) >= limits_.max_queued) {
    queued_.fetch_sub(1);
    return busy(
        "enrollment queue full", std::chrono::milliseconds(1000),
        "the coordinator is busy with " + std::to_string(limits_.max_queued) + " enrollments");
  }
  workers_->Post([this, ctx, request, response, reactor, peer] {
    grpc::Status s = Handle(*request, peer, response);
    if (!s.ok()) {
      FLEET_LOG(Warn) << "refused enrollment from " << ctx->peer() << ": " << s.error_message();
    }
    queued_.fetch_sub(1);
    reactor->Finish(s);
  });
  return reactor;
}

grpc::Status EnrollmentService::Handle(const grpc::ByteBuffer& request, const std::string& peer,
                                       grpc::ByteBuffer* response) {
  // A v3 device sends a token proof, not the token; a v2 device still sends the token itself
  // (field 3, now unknown), refused below as a version mismatch. The request's bytes and any
  // unknown length-delimited field are wiped when done (gRPC's own buffers are not ours).
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (request.Dump(&slices).ok()) {
    for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  v1::EnrollRequest req;
  const bool parsed = req.ParseFromString(bytes);
  sodium_memzero(bytes.data(), bytes.size());
  struct Wipe {
    v1::EnrollRequest* r;
    ~Wipe() {
      google::protobuf::UnknownFieldSet* unknown = r->GetReflection()->MutableUnknownFields(r);
      for (int i = 0; i < unknown->field_count(); ++i) {
        google::protobuf::UnknownField* f = unknown->mutable_field(i);
        if (f->type() == google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
          std::string* v = f->mutable_length_delimited();
          sodium_memzero(v->data(), v->size());
        }
      }
      unknown->Clear();
    }
  } wipe{&req};
  if (!parsed) {
    c_->refusals().Refused("malformed request", peer, "");
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "malformed EnrollRequest");
  }
  grpc::Status v = CheckVersion(req.protocol_version());
  if (!v.ok()) return v;
  StatusOr<v1::EnrollResponse> r = c_->Enroll(req, peer);
  if (!r.ok()) {
    FLEET_LOG(Warn) << "refused enrollment of '" << Utf8Prefix(req.device_id(), 128)
                    << "': " << r.status().message();
    return ToGrpcStatus(r.status());
  }
  const std::string out = r->SerializeAsString();
  grpc::Slice slice(out);
  *response = grpc::ByteBuffer(&slice, 1);
  return grpc::Status::OK;
}

grpc::Status AdminService::Allow(const grpc::ServerContext& ctx, std::string* who) {
  Status s = c_->access().CheckAdmin(ctx, who);
  if (s.ok()) return grpc::Status::OK;
  FLEET_LOG(Warn) << "refused admin RPC from " << ctx.peer() << ": " << s.message();
  return ToGrpcStatus(s);
}

grpc::Status AdminService::SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req,
                                     v1::JobStatus* resp) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, &who); !a.ok()) return a;
  return Reply(c_->SubmitJob(req->spec(), who), resp);
}

grpc::Status AdminService::GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req,
                                  v1::JobStatus* resp) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, &who); !a.ok()) return a;
  return Reply(c_->GetJob(req->id()), resp);
}

grpc::Status AdminService::ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest*,
                                    v1::ListJobsResponse* resp) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, &who); !a.ok()) return a;
  for (auto& j : c_->ListJobs()) *resp->add_jobs() = std::move(j);
  return grpc::Status::OK;
}

grpc::Status AdminService::WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                                    grpc::ServerWriter<v1::JobStatus>* writer) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, &who); !a.ok()) return a;
  uint64_t version = 0;
  std::string last_sent;
  // A watch holds a server thread: it ends after limits_.watch (fleetctl opens a new one), and
  // is cancelled when the admin stops reading and an update waits longer than limits_.idle.
  const auto end = std::chrono::steady_clock::now() + limits_.watch;
  while (!ctx->IsCancelled()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= end) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          "WatchJob reached the coordinator's limit of " +
                              std::to_string(limits_.watch.count()) + " s; watch again");
    }
    StatusOr<v1::JobStatus> job = c_->GetJob(req->id());
    if (!job.ok()) return ToGrpcStatus(job.status());
    std::string encoded = job->SerializeAsString();
    if (encoded != last_sent) {
      CallTimer::Id stall = timer_.At(now + limits_.idle, [ctx] {
        ctx->TryCancel();
        return CallTimer::kDone;
      });
      const bool sent = writer->Write(*job);
      timer_.Cancel(stall);
      if (!sent) return grpc::Status::OK;  // watcher went away (or stopped reading)
      last_sent = std::move(encoded);
    }
    auto state = job->state();
    if (state == v1::JobStatus::SUCCEEDED || state == v1::JobStatus::FAILED ||
        state == v1::JobStatus::STOPPED) {
      return grpc::Status::OK;
    }
    c_->WaitForChange(&version, std::min(std::chrono::milliseconds(500),
                                         std::chrono::duration_cast<std::chrono::milliseconds>(
                                             end - now + std::chrono::milliseconds(1))));
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled");
}

grpc::Status AdminService::StopJob(grpc::ServerContext* ctx, const v1::StopJobRequest* req,
                                   v1::JobStatus* resp) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, &who); !a.ok()) return a;
  return Reply(c_->StopJob(req->id(), who), resp);
}

grpc::Status AdminService::ListDevices(grpc::ServerContext* ctx, const v1::ListDevicesRequest*,
                                       v1::ListDevicesResponse* resp) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, &who); !a.ok()) return a;
  for (auto& d : c_->registry().List()) *resp->add_devices() = std::move(d);
  return grpc::Status::OK;
}

grpc::Status AdminService::CreateToken(grpc::ServerContext* ctx,
                                       const v1::CreateTokenRequest* req,
                                       v1::CreateTokenResponse* resp) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, &who); !a.ok()) return a;
  auto r = c_->CreateToken(TokenSpecOf(*req), who);
  if (!r.ok()) return ToGrpcStatus(r.status());
  resp->set_token(r->first);
  *resp->mutable_info() = r->second;
  return grpc::Status::OK;
}

grpc::Status AdminService::ListTokens(grpc::ServerContext* ctx, const v1::ListTokensRequest*,
                                      v1::ListTokensResponse* resp) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, &who); !a.ok()) return a;
  StatusOr<std::vector<v1::TokenInfo>> tokens = c_->ListTokens();
  if (!tokens.ok()) return ToGrpcStatus(tokens.status());
  for (auto& t : *tokens) *resp->add_tokens() = std::move(t);
  return grpc::Status::OK;
}

grpc::Status AdminService::RevokeToken(grpc::ServerContext* ctx, const v1::RevokeTokenRequest* req,
                                       v1::TokenInfo* resp) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, &who); !a.ok()) return a;
  return Reply(c_->RevokeToken(req->id(), who), resp);
}

grpc::Status AdminService::RevokeDevice(grpc::ServerContext* ctx,
                                        const v1::RevokeDeviceRequest* req,
                                        v1::RevokeDeviceResponse* resp) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, &who); !a.ok()) return a;
  StatusOr<uint32_t> closed = c_->RevokeDevice(req->id(), who);
  if (!closed.ok()) return ToGrpcStatus(closed.status());
  resp->set_closed_calls(*closed);
  return grpc::Status::OK;
}

grpc::Status AdminService::ResetDevice(grpc::ServerContext* ctx, const v1::ResetDeviceRequest* req,
                                       v1::ResetDeviceResponse* resp) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, &who); !a.ok()) return a;
  return Reply(c_->ResetDevice(req->id(), who), resp);
}

}  // namespace fleet
