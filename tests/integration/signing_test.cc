// What a device acts on is what the coordinator signed, and a restarted device does not go back
// to an older model (issue 16, item 6). A real fleet-client trains in a real job; a fake device
// in the same rounds captures the signed tasks (every device of a round gets the same bytes).
// Then the client restarts against a stand-in coordinator (the fleet's own server certificate,
// mTLS) that offers it those captured tasks: tampered, rolled back, and genuine.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <condition_variable>
#include <deque>
#include <future>

#include "common/grpc_util.h"
#include "harness.h"
#include "proto/fleet.grpc.pb.h"

namespace fleet::testing {
namespace {

// A Device service that offers queued signed tasks and records what devices answer.
class StandIn final : public v1::Device::Service {
 public:
  void Offer(v1::SignedTask t) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(t));
  }
  // Waits until `n` answers (decline reasons or, for a trained update, "trained").
  std::vector<std::string> Answers(size_t n, std::chrono::seconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return answers_.size() >= n; });
    return answers_;
  }

  grpc::Status Join(grpc::ServerContext*, const v1::JoinRequest*, v1::JoinResponse* r) override {
    r->set_protocol_version(kProtocolVersion);
    r->set_heartbeat_interval_ms(300);
    return grpc::Status::OK;
  }
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*,
                         v1::HeartbeatResponse*) override {
    return grpc::Status::OK;
  }
  grpc::Status FetchTask(grpc::ServerContext*, const v1::FetchTaskRequest*,
                         v1::SignedTask* out) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!queue_.empty()) {
        *out = std::move(queue_.front());
        queue_.pop_front();
        return grpc::Status::OK;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    return grpc::Status::OK;  // no task
  }
  grpc::Status PushUpdate(grpc::ServerContext*, grpc::ServerReader<v1::UpdateChunk>* reader,
                          v1::PushUpdateResponse*) override {
    v1::UpdateChunk c;
    std::string answer;
    if (reader->Read(&c)) {
      answer = c.header().error().empty() ? "trained" : c.header().error();
    }
    while (reader->Read(&c)) {
    }
    std::lock_guard<std::mutex> lock(mu_);
    answers_.push_back(answer);
    cv_.notify_all();
    return grpc::Status::OK;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::SignedTask> queue_;
  std::vector<std::string> answers_;
};

TEST(Signing, RestartedDeviceRefusesTamperedAndRolledBackTasks) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  Process& client = c.StartHarClient(1);
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() >= 1; }, std::chrono::seconds(30)));

  // The tap: a device of the same dataset that records each round's signed task and declines it.
  auto tap = v1::Device::NewStub(*MakeChannel(c.address(), c.DeviceTls("tap"), 64 << 20));
  {
    v1::JoinRequest j;
    j.set_protocol_version(kProtocolVersion);
    j.set_device_id("tap");
    auto* d = j.add_datasets();
    d->set_name("uci-har");
    d->set_train_examples(100);
    grpc::ClientContext ctx;
    v1::JoinResponse resp;
    ASSERT_TRUE(tap->Join(&ctx, j, &resp).ok());
  }
  std::atomic<bool> stop{false};
  std::map<uint32_t, v1::SignedTask> captured;
  std::mutex captured_mu;
  auto tapping = std::async(std::launch::async, [&] {
    while (!stop) {
      v1::FetchTaskRequest req;
      req.set_protocol_version(kProtocolVersion);
      req.set_device_id("tap");
      req.set_wait_ms(300);
      grpc::ClientContext ctx;
      v1::SignedTask st;
      v1::Task task;
      if (!tap->FetchTask(&ctx, req, &st).ok() || !task.ParseFromString(st.task()) ||
          task.kind() != v1::Task::TRAIN) {
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(captured_mu);
        captured[task.round()] = st;
      }
      grpc::ClientContext pctx;
      v1::PushUpdateResponse resp;
      auto w = tap->PushUpdate(&pctx, &resp);
      v1::UpdateChunk chunk;
      auto* h = chunk.mutable_header();
      h->set_protocol_version(kProtocolVersion);
      h->set_device_id("tap");
      h->set_job_id(task.job_id());
      h->set_round(task.round());
      h->set_error("the tap only listens");
      w->Write(chunk);
      w->WritesDone();
      (void)w->Finish();
    }
  });
  auto job =
      c.Fleetctl({"job", "submit", "--watch", "-f",
                  c.WriteJob("it-signed", 3, 1, 2, "secure_aggregation: {enabled: false}\n")});
  stop = true;
  tapping.wait();
  ASSERT_EQ(job.exit_code, 0) << job.output << c.coordinator().Log();
  {
    std::lock_guard<std::mutex> lock(captured_mu);
    ASSERT_EQ(captured.size(), 3u) << "the tap was not selected every round";
  }
  for (int r = 1; r <= 3; ++r) {
    EXPECT_NE(client.Log().find("round " + std::to_string(r) + ": trained on"), std::string::npos)
        << client.Log();
  }
  // The newest accepted round is on the device's disk, owner-only.
  const std::string accepted = c.dir() + "/device-1/accepted-rounds";
  struct stat st {};
  ASSERT_EQ(::stat(accepted.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  client.Kill(SIGTERM);
  ASSERT_EQ(client.Wait(std::chrono::seconds(20)), 0) << client.Log();

  // The stand-in coordinator, with the fleet's server certificate and mTLS.
  StandIn standin;
  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_root_certs = ReadAll(c.ca());
  ssl.pem_key_cert_pairs.push_back(
      {ReadAll(c.pki() + "/server.key"), ReadAll(c.pki() + "/server.pem")});
  int port = 0;
  grpc::ServerBuilder b;
  b.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(ssl), &port);
  b.RegisterService(&standin);
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  ASSERT_TRUE(server && port != 0);

  // Round 3's task with its activation changed (signature left as it was).
  v1::SignedTask tampered = captured[3];
  v1::Task body;
  ASSERT_TRUE(body.ParseFromString(tampered.task()));
  ASSERT_EQ(body.model().activation(), "relu");
  body.mutable_model()->set_activation("tanh");
  tampered.set_task(body.SerializeAsString());
  standin.Offer(captured[1]);  // genuine, but older than round 3, accepted before the restart
  standin.Offer(tampered);
  standin.Offer(captured[3]);  // genuine and current: still taken after the refusals

  Process& again = c.StartHarClient(1, true, "127.0.0.1:" + std::to_string(port));
  std::vector<std::string> answers = standin.Answers(3, std::chrono::seconds(60));
  ASSERT_EQ(answers.size(), 3u) << again.Log();
  EXPECT_NE(answers[0].find("older than round 3"), std::string::npos) << answers[0];
  EXPECT_NE(answers[0].find("(rollback)"), std::string::npos) << answers[0];
  EXPECT_NE(answers[1].find("global model refused: the task's signature does not verify"),
            std::string::npos)
      << answers[1];
  EXPECT_EQ(answers[2], "trained") << again.Log();
  const std::string log = again.Log();
  EXPECT_NE(log.find("signature does not verify"), std::string::npos) << log;
  EXPECT_NE(log.find("rollback"), std::string::npos) << log;
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
}

}  // namespace
}  // namespace fleet::testing
