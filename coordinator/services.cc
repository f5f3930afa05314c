#include "coordinator/services.h"

#include "common/config.h"
#include "common/grpc_util.h"
#include "common/log.h"
#include "common/semaphore.h"

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
  grpc::Status s = ToGrpcStatus(c_->Join(*req));
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

bool ParseRequest(const grpc::ByteBuffer& buffer, google::protobuf::Message* out) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return false;
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out->ParseFromString(bytes);
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
  if (!ParseRequest(request, &req)) {
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

grpc::Status DeviceService::PushUpdate(grpc::ServerContext* ctx,
                                       grpc::ServerReader<v1::UpdateChunk>* reader,
                                       v1::PushUpdateResponse* resp) {
  v1::UpdateChunk chunk;
  if (!reader->Read(&chunk) || !chunk.has_header()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "PushUpdate: the first chunk must carry the update header");
  }
  const v1::UpdateHeader header = chunk.header();
  grpc::Status v = CheckVersion(header.protocol_version());
  if (!v.ok()) return v;
  if (grpc::Status a = Allow(*ctx, header.device_id()); !a.ok()) return a;
  AccessControl::CallGuard guard(&c_->access(), header.device_id(), ctx);
  if (!c_->registry().Touch(header.device_id(), false)) return NotJoined(header.device_id());
  StatusOr<size_t> max = c_->MaxUpdateBytes(header.job_id());
  if (!max.ok()) return ToGrpcStatus(max.status());
  if (header.total_bytes() > *max) {
    FLEET_LOG(Warn) << "job " << header.job_id() << ": refused update from "
                    << header.device_id() << ": " << header.total_bytes()
                    << " bytes exceeds the job's limit of " << *max;
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "update of " + std::to_string(header.total_bytes()) +
                            " bytes exceeds this job's limit of " + std::to_string(*max));
  }
  // At most max_concurrent_updates payloads are buffered at once, so ingest memory is
  // O(model size) however many devices upload together; the rest wait, held back by HTTP/2 flow
  // control.
  Semaphore::Permit permit(&c_->update_slots());
  std::string payload;
  payload.reserve(header.total_bytes());
  do {
    if (payload.size() + chunk.data().size() > header.total_bytes()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "update is longer than its declared total_bytes " +
                              std::to_string(header.total_bytes()));
    }
    payload.append(chunk.data());
  } while (reader->Read(&chunk));
  if (payload.size() != header.total_bytes()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "update has " + std::to_string(payload.size()) +
                            " bytes, header declared " + std::to_string(header.total_bytes()));
  }
  grpc::Status s = ToGrpcStatus(c_->OnUpdate(header, payload));
  resp->set_accepted(s.ok());
  return s;
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
  return Reply(c_->Renew(*req), resp);
}

grpc::Status DeviceService::Allow(const grpc::ServerContextBase& ctx,
                                  const std::string& device_id) {
  Status s = ValidateDeviceId(device_id);
  if (s.ok()) s = c_->access().CheckDevice(ctx, device_id);
  if (s.ok()) return grpc::Status::OK;
  FLEET_LOG(Warn) << "refused device RPC for '" << device_id.substr(0, 128) << "' from "
                  << ctx.peer() << ": " << s.message();
  return ToGrpcStatus(s);
}

grpc::Status EnrollmentService::Enroll(grpc::ServerContext* ctx, const v1::EnrollRequest* req,
                                       v1::EnrollResponse* resp) {
  grpc::Status v = CheckVersion(req->protocol_version());
  if (!v.ok()) return v;
  StatusOr<v1::EnrollResponse> r = c_->Enroll(*req);
  if (!r.ok()) {
    FLEET_LOG(Warn) << "refused enrollment of '" << req->device_id().substr(0, 128) << "' from "
                    << ctx->peer() << ": " << r.status().message();
  }
  return Reply(std::move(r), resp);
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
  while (!ctx->IsCancelled()) {
    StatusOr<v1::JobStatus> job = c_->GetJob(req->id());
    if (!job.ok()) return ToGrpcStatus(job.status());
    std::string encoded = job->SerializeAsString();
    if (encoded != last_sent) {
      if (!writer->Write(*job)) return grpc::Status::OK;  // watcher went away
      last_sent = std::move(encoded);
    }
    auto state = job->state();
    if (state == v1::JobStatus::SUCCEEDED || state == v1::JobStatus::FAILED ||
        state == v1::JobStatus::STOPPED) {
      return grpc::Status::OK;
    }
    c_->WaitForChange(&version, std::chrono::milliseconds(500));
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
  auto r = c_->access().CreateToken(req->ttl_s(), req->uses(), req->label(), who);
  if (!r.ok()) return ToGrpcStatus(r.status());
  resp->set_token(r->first);
  *resp->mutable_info() = r->second;
  return grpc::Status::OK;
}

grpc::Status AdminService::ListTokens(grpc::ServerContext* ctx, const v1::ListTokensRequest*,
                                      v1::ListTokensResponse* resp) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, &who); !a.ok()) return a;
  for (auto& t : c_->access().ListTokens()) *resp->add_tokens() = std::move(t);
  return grpc::Status::OK;
}

grpc::Status AdminService::RevokeToken(grpc::ServerContext* ctx, const v1::RevokeTokenRequest* req,
                                       v1::TokenInfo* resp) {
  std::string who;
  if (grpc::Status a = Allow(*ctx, &who); !a.ok()) return a;
  return Reply(c_->access().RevokeToken(req->id(), who), resp);
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

}  // namespace fleet
