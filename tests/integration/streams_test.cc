// Streaming calls cannot be held by a peer that stops sending (issue 16, item 4): the real
// coordinator over mTLS, the test playing the devices with their own certificates. A device's
// PushUpdate is checked (selected, not answered, no other upload open) before it takes one of
// the 8 ingest slots, and a stream that sends nothing is ended by the coordinator after its idle
// deadline; WatchJob streams are bounded too.
#include <gtest/gtest.h>

#include <future>

#include "common/grpc_util.h"
#include "common/model_layout.h"
#include "common/tensor_codec.h"
#include "harness.h"
#include "proto/fleet.grpc.pb.h"

namespace fleet::testing {
namespace {

using Clock = std::chrono::steady_clock;

class Devices {
 public:
  explicit Devices(Cluster& c) : c_(c) {
    admin_ = v1::Admin::NewStub(*MakeChannel(c.address(), c.AdminTls(), 64 << 20));
  }
  v1::Device::Stub* operator[](const std::string& id) {
    auto& stub = stubs_[id];
    if (!stub) stub = v1::Device::NewStub(*MakeChannel(c_.address(), c_.DeviceTls(id), 64 << 20));
    return stub.get();
  }
  grpc::Status Join(const std::string& id, const std::string& dataset = "numbers") {
    v1::JoinRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_device_id(id);
    auto* d = req.add_datasets();
    d->set_name(dataset);
    d->set_train_examples(10);
    v1::JoinResponse resp;
    grpc::ClientContext ctx;
    return (*this)[id]->Join(&ctx, req, &resp);
  }
  v1::Task Fetch(const std::string& id) {
    v1::FetchTaskRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_device_id(id);
    req.set_wait_ms(10000);
    v1::SignedTask signed_task;
    grpc::ClientContext ctx;
    EXPECT_TRUE((*this)[id]->FetchTask(&ctx, req, &signed_task).ok());
    v1::Task task;
    EXPECT_TRUE(task.ParseFromString(signed_task.task()));
    return task;
  }
  v1::UpdateHeader Header(const std::string& id, const std::string& job, uint64_t bytes) {
    v1::UpdateHeader h;
    h.set_protocol_version(kProtocolVersion);
    h.set_device_id(id);
    h.set_job_id(job);
    h.set_round(1);
    h.set_num_examples(10);
    h.set_total_bytes(bytes);
    return h;
  }
  // A whole update; the device gives up after `deadline`.
  grpc::Status Push(const std::string& id, const std::string& job, const std::string& payload,
                    std::chrono::seconds deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + deadline);
    v1::PushUpdateResponse resp;
    auto w = (*this)[id]->PushUpdate(&ctx, &resp);
    v1::UpdateChunk c;
    *c.mutable_header() = Header(id, job, payload.size());
    c.set_data(payload);
    w->Write(c);
    w->WritesDone();
    return w->Finish();
  }
  v1::JobStatus Job(const std::string& id) {
    grpc::ClientContext ctx;
    v1::GetJobRequest g;
    g.set_id(id);
    v1::JobStatus status;
    (void)admin_->GetJob(&ctx, g, &status);
    return status;
  }
  v1::Admin::Stub* admin() { return admin_.get(); }

 private:
  Cluster& c_;
  std::map<std::string, std::unique_ptr<v1::Device::Stub>> stubs_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

// A PushUpdate stream that sends its header and then nothing, held open by the device.
struct StalledUpload {
  grpc::ClientContext ctx;
  v1::PushUpdateResponse resp;
  std::unique_ptr<grpc::ClientWriter<v1::UpdateChunk>> writer;
  std::future<std::pair<grpc::Status, Clock::duration>> finished;

  StalledUpload(v1::Device::Stub* stub, const v1::UpdateHeader& header) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    writer = stub->PushUpdate(&ctx, &resp);
    v1::UpdateChunk c;
    *c.mutable_header() = header;
    writer->Write(c);
    const auto opened = Clock::now();
    finished = std::async(std::launch::async, [this, opened] {
      grpc::Status s = writer->Finish();  // waits for the coordinator's answer; sends no more
      return std::make_pair(s, Clock::now() - opened);
    });
  }
  ~StalledUpload() {
    ctx.TryCancel();
    if (finished.valid()) finished.wait();
  }
};

v1::JobSpec NumbersJob(uint32_t target) {
  v1::JobSpec spec;
  spec.set_name("numbers");
  spec.set_dataset("numbers");
  auto* m = spec.mutable_model();
  m->set_type("mlp");
  m->set_task("classification");
  m->set_input_dim(3);
  m->set_output_dim(2);
  m->set_activation("relu");
  auto* t = spec.mutable_train();
  t->set_local_epochs(1);
  t->set_batch_size(4);
  t->set_learning_rate(0.1f);
  t->set_optimizer("sgd");
  spec.mutable_strategy()->set_name("fedavg");
  spec.set_rounds(1);
  spec.set_min_clients(2);
  spec.set_target_clients(target);
  spec.set_round_deadline_s(60);
  spec.set_eval_deadline_s(5);
  spec.set_seed(3);
  spec.mutable_secure_aggregation()->set_disabled(true);
  return spec;
}

std::string Submit(Devices& d, const v1::JobSpec& spec) {
  grpc::ClientContext ctx;
  v1::SubmitJobRequest req;
  *req.mutable_spec() = spec;
  v1::JobStatus job;
  grpc::Status s = d.admin()->SubmitJob(&ctx, req, &job);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return job.id();
}

bool Succeeds(Devices& d, const std::string& job, v1::JobStatus* status) {
  return WaitFor(
      [&] {
        *status = d.Job(job);
        return status->state() == v1::JobStatus::SUCCEEDED;
      },
      std::chrono::seconds(30));
}

// One selected device opens 8 header-only uploads (the number of ingest slots) and stops
// sending. The other devices' uploads still land at once and the round completes; of the stalled
// streams, one was admitted and is ended by the coordinator after the idle deadline, the other
// seven were refused at once because that device already had an upload open.
TEST(Uploads, StalledStreamsOfOneDeviceDoNotBlockTheRound) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator({"--stream-idle-timeout-s", "3"})) << c.coordinator().Log();
  Devices d(c);
  for (const char* id : {"stall", "good-a", "good-b"}) ASSERT_TRUE(d.Join(id).ok()) << id;
  const v1::JobSpec spec = NumbersJob(3);
  const std::string job = Submit(d, spec);
  for (const char* id : {"stall", "good-a", "good-b"}) {
    v1::Task t = d.Fetch(id);
    ASSERT_EQ(t.kind(), v1::Task::TRAIN) << id;
  }
  const ModelLayout layout = *LayoutFor(spec.model());
  const std::vector<float> params(layout.total, 0.25f);
  const std::string update = EncodeParameters(layout, params.data());

  std::vector<std::unique_ptr<StalledUpload>> stalled;
  for (int i = 0; i < 8; ++i) {
    stalled.push_back(
        std::make_unique<StalledUpload>(d["stall"], d.Header("stall", job, update.size())));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the headers have arrived

  const auto pushed = Clock::now();
  for (const char* id : {"good-a", "good-b"}) {
    grpc::Status s = d.Push(id, job, update, std::chrono::seconds(10));
    EXPECT_TRUE(s.ok()) << id << ": " << s.error_message();
  }
  EXPECT_LT(Clock::now() - pushed, std::chrono::seconds(3)) << "the uploads waited for a slot";

  int refused = 0, timed_out = 0;
  for (auto& u : stalled) {
    ASSERT_EQ(u->finished.wait_for(std::chrono::seconds(20)), std::future_status::ready);
    auto [status, took] = u->finished.get();
    if (status.error_code() == grpc::StatusCode::ALREADY_EXISTS) {
      ++refused;
      EXPECT_NE(status.error_message().find("already has an upload open"), std::string::npos)
          << status.error_message();
      EXPECT_LT(took, std::chrono::seconds(2));
    } else {
      ++timed_out;
      EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
      EXPECT_NE(status.error_message().find("no data for 3 s"), std::string::npos)
          << status.error_message();
      EXPECT_GE(took, std::chrono::milliseconds(2900));
      EXPECT_LT(took, std::chrono::seconds(10));
    }
  }
  EXPECT_EQ(refused, 7);
  EXPECT_EQ(timed_out, 1);
  EXPECT_NE(c.coordinator().Log().find("PushUpdate from stall ended: no data for 3 s"),
            std::string::npos);

  // The staller goes quiet (offline), so the round closes with the two updates.
  v1::JobStatus status;
  ASSERT_TRUE(Succeeds(d, job, &status)) << status.DebugString() << c.coordinator().Log();
  ASSERT_EQ(status.rounds_size(), 1);
  EXPECT_EQ(status.rounds(0).selected(), 3u);
  EXPECT_EQ(status.rounds(0).participants(), 2u);
}

// A device that was not selected cannot take a slot either: each of its 8 header-only streams is
// refused at once, and the selected devices' uploads land.
TEST(Uploads, StreamsOfANonSelectedDeviceAreRefusedBeforeTakingASlot) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  Devices d(c);
  ASSERT_TRUE(d.Join("good-a").ok());
  ASSERT_TRUE(d.Join("good-b").ok());
  ASSERT_TRUE(d.Join("outsider", "other-dataset").ok());
  const v1::JobSpec spec = NumbersJob(2);
  const std::string job = Submit(d, spec);
  for (const char* id : {"good-a", "good-b"}) ASSERT_EQ(d.Fetch(id).kind(), v1::Task::TRAIN);
  const ModelLayout layout = *LayoutFor(spec.model());
  const std::vector<float> params(layout.total, 0.5f);
  const std::string update = EncodeParameters(layout, params.data());

  std::vector<std::unique_ptr<StalledUpload>> outsider;
  for (int i = 0; i < 8; ++i) {
    outsider.push_back(
        std::make_unique<StalledUpload>(d["outsider"], d.Header("outsider", job, update.size())));
  }
  for (auto& u : outsider) {
    ASSERT_EQ(u->finished.wait_for(std::chrono::seconds(5)), std::future_status::ready)
        << "a stream of a device that was not selected is still open";
    auto [status, took] = u->finished.get();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(status.error_message().find("device outsider was not selected for round 1"),
              std::string::npos)
        << status.error_message();
  }
  for (const char* id : {"good-a", "good-b"}) {
    grpc::Status s = d.Push(id, job, update, std::chrono::seconds(10));
    EXPECT_TRUE(s.ok()) << id << ": " << s.error_message();
  }
  v1::JobStatus status;
  ASSERT_TRUE(Succeeds(d, job, &status)) << status.DebugString();
  EXPECT_EQ(status.rounds(0).participants(), 2u);
}

// A link that drops mid-upload while the coordinator does not notice (its side of the connection
// stays open and silent): the client's retry finds its old stream still open and is refused with
// "already has an upload open", which it retries (it must not take it for a delivered update)
// until the coordinator ends the silent stream at its idle bound. The update is counted once.
TEST(Uploads, RetryWhileTheOldStreamIsStillOpenIsDeliveredAfterTheIdleBound) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator({"--stream-idle-timeout-s", "3"})) << c.coordinator().Log();
  TcpProxy proxy(c.port());
  proxy.CutClientSideOnly();
  c.set_client_config_extra(1, "chunk_kb: 16\n");  // the header chunk arrives, later ones do not
  Process& cut = c.StartHarClient(1, true, "127.0.0.1:" + std::to_string(proxy.port()));
  for (int s : {3, 5}) c.StartHarClient(s);
  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() >= 3; }, std::chrono::seconds(30)));
  proxy.CutAfterUpstreamBytes(40000);  // the HAR update is ~73 KB
  auto submit = c.Fleetctl({"job", "submit", "--watch", "-f",
                            c.WriteJob("it-half-cut", 1, 3, 3,
                                       "secure_aggregation: {enabled: false}\n"
                                       "round_deadline_s: 30\nmax_round_retries: 0\n")});
  ASSERT_EQ(submit.exit_code, 0) << submit.output << c.coordinator().Log() << cut.Log();
  const std::string id = submit.output.substr(0, submit.output.find('\n'));
  EXPECT_EQ(proxy.cuts(), 1);
  EXPECT_NE(cut.Log().find(kUploadOpenReason), std::string::npos) << cut.Log();
  EXPECT_NE(c.coordinator().Log().find("PushUpdate from har-subject-1 ended: no data for 3 s"),
            std::string::npos)
      << c.coordinator().Log();
  const std::string json = c.Fleetctl({"-o", "json", "job", "get", id}).output;
  EXPECT_EQ(JsonInts(json, "participants"), (std::vector<int>{3})) << json;
}

// A WatchJob stream ends after the coordinator's limit with DEADLINE_EXCEEDED naming it, and
// fleetctl opens the next one: `job watch` still follows the job to its end.
TEST(Watch, StreamsAreBoundedAndFleetctlFollowsAcrossThem) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator({"--watch-timeout-s", "2"})) << c.coordinator().Log();
  Devices d(c);
  const std::string job = Submit(d, NumbersJob(2));  // pending: no device yet

  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::WatchJobRequest req;
  req.set_id(job);
  const auto opened = Clock::now();
  auto reader = d.admin()->WatchJob(&ctx, req);
  v1::JobStatus j;
  while (reader->Read(&j)) {
  }
  grpc::Status s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  EXPECT_NE(s.error_message().find("limit of 2 s"), std::string::npos) << s.error_message();
  EXPECT_LT(Clock::now() - opened, std::chrono::seconds(6));

  Process watch;
  ASSERT_TRUE(
      watch.Start({FLEETCTL_BIN, "--coordinator", c.address(), "--ca-cert", c.ca(), "--cert",
                   c.pki() + "/admin.pem", "--key", c.pki() + "/admin.key", "job", "watch", job},
                  c.dir() + "/watch.log"));
  std::this_thread::sleep_for(std::chrono::seconds(5));  // two server-side limits pass
  EXPECT_TRUE(watch.Running()) << watch.Log();
  for (const char* id : {"a", "b"}) ASSERT_TRUE(d.Join(id).ok());
  const ModelLayout layout = *LayoutFor(NumbersJob(2).model());
  const std::vector<float> params(layout.total, 0.5f);
  for (const char* id : {"a", "b"}) {
    ASSERT_EQ(d.Fetch(id).kind(), v1::Task::TRAIN);
    ASSERT_TRUE(
        d.Push(id, job, EncodeParameters(layout, params.data()), std::chrono::seconds(10)).ok());
  }
  EXPECT_EQ(watch.Wait(std::chrono::seconds(30)), 0) << watch.Log();
  EXPECT_NE(watch.Log().find("succeeded"), std::string::npos) << watch.Log();
}

}  // namespace
}  // namespace fleet::testing
