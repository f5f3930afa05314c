// The coordinator's standard gRPC health service (grpc.health.v1) over real TLS, as container
// health checks, Kubernetes gRPC probes and grpc_health_probe call it: with the pinned CA and no
// client certificate.
#include <gtest/gtest.h>

#include "harness.h"
#include "proto/fleet.grpc.pb.h"
#include "proto/health.grpc.pb.h"

namespace fleet::testing {
namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// Server-authenticated TLS only: the CA is pinned, no client certificate is presented.
ClientTlsOptions CaOnly(const Cluster& c) {
  ClientTlsOptions tls;
  tls.ca_file = c.ca();
  return tls;
}

grpc::Status Check(Health::Stub* stub, const std::string& service, HealthCheckResponse* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  HealthCheckRequest req;
  req.set_service(service);
  return stub->Check(&ctx, req, resp);
}

TEST(Health, ServesEveryServiceOverTlsWithoutAClientCertificate) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  auto channel = MakeChannel(c.address(), CaOnly(c), 1 << 20);
  ASSERT_TRUE(channel.ok()) << channel.status().message();
  auto stub = Health::NewStub(*channel);
  for (const char* service : {"", "fleet.v1.Device", "fleet.v1.Admin", "fleet.v1.Enrollment"}) {
    HealthCheckResponse resp;
    grpc::Status s = Check(stub.get(), service, &resp);
    ASSERT_TRUE(s.ok()) << "'" << service << "': " << s.error_message();
    EXPECT_EQ(resp.status(), HealthCheckResponse::SERVING) << "'" << service << "'";
  }
  HealthCheckResponse resp;
  EXPECT_EQ(Check(stub.get(), "fleet.v1.NoSuchService", &resp).error_code(),
            grpc::StatusCode::NOT_FOUND);
  // The same certificate-less channel reaches nothing else: health tells only SERVING or not.
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::ListJobsResponse jobs;
  EXPECT_EQ(v1::Admin::NewStub(*channel)->ListJobs(&ctx, v1::ListJobsRequest(), &jobs).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  // fleetctl health: the container health check's command, with the CA only.
  auto ok = RunCommand({FLEETCTL_BIN, "--coordinator", c.address(), "--ca-cert", c.ca(), "health"},
                       c.dir());
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_EQ(ok.output, "SERVING\n");
  auto device = RunCommand({FLEETCTL_BIN, "--coordinator", c.address(), "--ca-cert", c.ca(),
                            "health", "--service", "fleet.v1.Device"},
                           c.dir());
  EXPECT_EQ(device.exit_code, 0) << device.output;
  auto unknown = RunCommand({FLEETCTL_BIN, "--coordinator", c.address(), "--ca-cert", c.ca(),
                             "health", "--service", "fleet.v1.Nope"},
                            c.dir());
  EXPECT_EQ(unknown.exit_code, 1) << unknown.output;
  EXPECT_NE(unknown.output.find("no service 'fleet.v1.Nope'"), std::string::npos) << unknown.output;
  // A server whose certificate does not chain to the given CA is not asked at all.
  Cluster other;
  auto foreign = RunCommand({FLEETCTL_BIN, "--coordinator", c.address(), "--ca-cert", other.ca(),
                             "--timeout", "5", "health"},
                            c.dir());
  EXPECT_EQ(foreign.exit_code, 1) << foreign.output;
}

TEST(Health, WatchersSeeNotServingWhenTheCoordinatorDrains) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  auto stub = Health::NewStub(*MakeChannel(c.address(), CaOnly(c), 1 << 20));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  HealthCheckRequest req;
  auto watch = stub->Watch(&ctx, req);
  HealthCheckResponse resp;
  ASSERT_TRUE(watch->Read(&resp));
  EXPECT_EQ(resp.status(), HealthCheckResponse::SERVING);
  c.coordinator().Kill(SIGTERM);
  ASSERT_TRUE(watch->Read(&resp)) << "the watch ended without a NOT_SERVING update: "
                                  << watch->Finish().error_message();
  EXPECT_EQ(resp.status(), HealthCheckResponse::NOT_SERVING);
  ctx.TryCancel();
  EXPECT_EQ(c.coordinator().Wait(std::chrono::seconds(30)), 0) << c.coordinator().Log();
  auto down = RunCommand(
      {FLEETCTL_BIN, "--coordinator", c.address(), "--ca-cert", c.ca(), "--timeout", "5", "health"},
      c.dir());
  EXPECT_EQ(down.exit_code, 1) << down.output;
  EXPECT_NE(down.output.find("is fleet-coordinator running"), std::string::npos) << down.output;
}

}  // namespace
}  // namespace fleet::testing
