// gRPC front ends of the Coordinator. Every device RPC checks the protocol version and the
// caller's certificate (AccessControl); handlers do bounded work and never hold a lock across a
// network write. Most methods use the sync API. Two use the callback API, so that a waiting call
// holds no thread: FetchTask, the long poll every idle device keeps open, which answers with the
// round's task bytes shared by all devices (zero-copy), and SecAgg, which every device of a
// secure round keeps open until its stage closes.
#pragma once

#include "coordinator/coordinator.h"
#include "proto/fleet.grpc.pb.h"

namespace fleet {

class FetchReactor;

class DeviceService final : public v1::Device::WithRawCallbackMethod_FetchTask<
                                v1::Device::WithCallbackMethod_SecAgg<v1::Device::Service>> {
 public:
  explicit DeviceService(Coordinator* c) : c_(c) {}
  grpc::Status Join(grpc::ServerContext*, const v1::JoinRequest*, v1::JoinResponse*) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*,
                         v1::HeartbeatResponse*) override;
  grpc::ServerUnaryReactor* FetchTask(grpc::CallbackServerContext*, const grpc::ByteBuffer*,
                                      grpc::ByteBuffer*) override;
  grpc::Status PushUpdate(grpc::ServerContext*, grpc::ServerReader<v1::UpdateChunk>*,
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
  Coordinator* c_;
};

// Reachable without a client certificate: a bootstrap token buys one.
class EnrollmentService final : public v1::Enrollment::Service {
 public:
  explicit EnrollmentService(Coordinator* c) : c_(c) {}
  grpc::Status Enroll(grpc::ServerContext*, const v1::EnrollRequest*,
                      v1::EnrollResponse*) override;

 private:
  Coordinator* c_;
};

class AdminService final : public v1::Admin::Service {
 public:
  explicit AdminService(Coordinator* c) : c_(c) {}
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

 private:
  // Admin certificate check; *who names the admin.
  grpc::Status Allow(const grpc::ServerContext& ctx, std::string* who);
  Coordinator* c_;
};

}  // namespace fleet
