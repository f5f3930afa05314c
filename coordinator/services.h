// gRPC front ends of the Coordinator. Every device RPC checks the protocol version and the
// caller's certificate (AccessControl); handlers do bounded work and never hold a lock across a
// network write. Most methods use the sync API. Three use the callback API, so that a waiting
// call holds no thread: FetchTask, the long poll every idle device keeps open, which answers with
// the round's task bytes shared by all devices (zero-copy); SecAgg, which every device of a
// secure round keeps open until its stage closes; and PushUpdate, whose stream can wait for an
// ingest slot or for a slow device, and which the coordinator ends itself when the device stops
// sending (StreamLimits).
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "coordinator/call_timer.h"
#include "coordinator/coordinator.h"
#include "coordinator/rate_limiter.h"
#include "proto/fleet.grpc.pb.h"

namespace fleet {

class FetchReactor;
class UploadReactor;
class IngestWorkers;

// Server-side bounds of the streaming calls (README "fleet-coordinator": stream_idle_timeout_s,
// upload_timeout_s, watch_timeout_s). gRPC sets no server deadline of its own, and a peer that
// stops sending would otherwise hold its stream (and an upload its ingest slot) forever.
struct StreamLimits {
  // PushUpdate: longest wait for the next chunk (the header included) while the stream reads;
  // WatchJob: longest an update may wait for the admin to take it.
  std::chrono::seconds idle{30};
  // Longest PushUpdate stream; also never past the round's own deadline for updates.
  std::chrono::seconds upload{300};
  // Longest WatchJob stream (fleetctl then opens a new one).
  std::chrono::seconds watch{3600};
};

class DeviceService final
    : public v1::Device::WithCallbackMethod_PushUpdate<v1::Device::WithRawCallbackMethod_FetchTask<
          v1::Device::WithCallbackMethod_SecAgg<v1::Device::Service>>> {
 public:
  explicit DeviceService(Coordinator* c, StreamLimits limits = {});
  ~DeviceService() override;
  grpc::Status Join(grpc::ServerContext*, const v1::JoinRequest*, v1::JoinResponse*) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*,
                         v1::HeartbeatResponse*) override;
  grpc::ServerUnaryReactor* FetchTask(grpc::CallbackServerContext*, const grpc::ByteBuffer*,
                                      grpc::ByteBuffer*) override;
  grpc::ServerReadReactor<v1::UpdateChunk>* PushUpdate(grpc::CallbackServerContext*,
                                                       v1::PushUpdateResponse*) override;
  grpc::Status ReportMetrics(grpc::ServerContext*, const v1::MetricsReport*,
                             v1::ReportMetricsResponse*) override;
  grpc::ServerUnaryReactor* SecAgg(grpc::CallbackServerContext*, const v1::SecAggRequest*,
                                   v1::SecAggResponse*) override;
  grpc::Status Renew(grpc::ServerContext*, const v1::RenewRequest*,
                     v1::EnrollResponse*) override;

 private:
  // mTLS identity check for a call about `device_id`; refusals are logged.
  grpc::Status Allow(const grpc::ServerContextBase& ctx, const std::string& device_id);
  grpc::Status StartFetch(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer& request,
                          FetchReactor* reactor, grpc::ByteBuffer* response);
  grpc::Status StartSecAgg(grpc::CallbackServerContext* ctx, const v1::SecAggRequest& request,
                           grpc::ServerUnaryReactor* reactor, v1::SecAggResponse* response);
  // One upload per device at a time: false when `device` already has one open.
  bool BeginUpload(const std::string& device);
  void EndUpload(const std::string& device);

  friend class UploadReactor;
  Coordinator* c_;
  const StreamLimits limits_;
  CallTimer timer_;                         // deadlines of open uploads
  std::unique_ptr<IngestWorkers> workers_;  // validate and aggregate complete uploads
  std::mutex uploads_mu_;
  std::set<std::string> uploading_;  // devices with an open upload; guarded by uploads_mu_
};

// Bounds of the enrollment service (README "fleet-coordinator": enroll_burst,
// enroll_rate_per_minute).
struct EnrollLimits {
  // Larger requests are refused from their length, before they are parsed (a real one is about
  // 1 KiB: a P-256 CSR and a token).
  size_t max_request_bytes = 16 << 10;
  uint32_t burst = 100;       // requests one peer (IP address) may make at once
  uint32_t per_minute = 600;  // and then per minute
  uint32_t max_queued = 64;   // enrollments waiting for or in a worker, from all peers
};

// Reachable without a client certificate: a bootstrap token buys one. The callback API with raw
// bytes, so that a request is rate-limited (per peer, RESOURCE_EXHAUSTED with the trailing
// metadata "fleet-retry-after-ms") and its size checked before anything parses it; accepted
// requests are parsed and handled on two worker threads of its own (they sign and fsync), with
// at most `max_queued` waiting.
class EnrollmentService final
    : public v1::Enrollment::WithRawCallbackMethod_Enroll<v1::Enrollment::Service> {
 public:
  explicit EnrollmentService(Coordinator* c, EnrollLimits limits = {});
  ~EnrollmentService() override;
  grpc::ServerUnaryReactor* Enroll(grpc::CallbackServerContext*, const grpc::ByteBuffer*,
                                   grpc::ByteBuffer*) override;

 private:
  grpc::Status Handle(const grpc::ByteBuffer& request, const std::string& peer,
                      grpc::ByteBuffer* response);
  Coordinator* c_;
  const EnrollLimits limits_;
  RateLimiter limiter_;
  std::atomic<uint32_t> queued_{0};
  std::unique_ptr<IngestWorkers> workers_;
};

class AdminService final : public v1::Admin::Service {
 public:
  explicit AdminService(Coordinator* c, StreamLimits limits = {}) : c_(c), limits_(limits) {}
  grpc::Status SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest*,
                         v1::JobStatus*) override;
  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest*, v1::JobStatus*) override;
  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest*,
                        v1::ListJobsResponse*) override;
  grpc::Status WatchJob(grpc::ServerContext*, const v1::WatchJobRequest*,
                        grpc::ServerWriter<v1::JobStatus>*) override;
  grpc::Status StopJob(grpc::ServerContext*, const v1::StopJobRequest*, v1::JobStatus*) override;
  grpc::Status ListDevices(grpc::ServerContext*, const v1::ListDevicesRequest*,
                           v1::ListDevicesResponse*) override;
  grpc::Status CreateToken(grpc::ServerContext*, const v1::CreateTokenRequest*,
                           v1::CreateTokenResponse*) override;
  grpc::Status ListTokens(grpc::ServerContext*, const v1::ListTokensRequest*,
                          v1::ListTokensResponse*) override;
  grpc::Status RevokeToken(grpc::ServerContext*, const v1::RevokeTokenRequest*,
                           v1::TokenInfo*) override;
  grpc::Status RevokeDevice(grpc::ServerContext*, const v1::RevokeDeviceRequest*,
                            v1::RevokeDeviceResponse*) override;
  grpc::Status ResetDevice(grpc::ServerContext*, const v1::ResetDeviceRequest*,
                           v1::ResetDeviceResponse*) override;

 private:
  // Admin certificate check; *who names the admin.
  grpc::Status Allow(const grpc::ServerContext& ctx, std::string* who);
  Coordinator* c_;
  const StreamLimits limits_;
  CallTimer timer_;  // cancels a WatchJob whose admin stopped reading
};

}  // namespace fleet
