// The device protocol against a real coordinator process, with the test playing the devices
// over real TLS gRPC: FedAvg is checked numerically, and every class of bad update is rejected
// without touching the aggregate.
#include <gtest/gtest.h>

#include <cmath>
#include <ctime>
#include <functional>
#include <future>

#include "aggregation/quantize.h"
#include "aggregation/secagg_client.h"
#include "common/config.h"
#include "common/grpc_util.h"
#include "common/job_spec.h"
#include "common/model_layout.h"
#include "common/tensor_codec.h"
#include "crypto/keys.h"
#include "crypto/pki.h"
#include "harness.h"
#include "proto/fleet.grpc.pb.h"

namespace fleet::testing {
namespace {

class FakeDevices {
 public:
  explicit FakeDevices(Cluster& c) : c_(c) {
    admin_ = v1::Admin::NewStub(*MakeChannel(c.address(), c.AdminTls(), 64 << 20));
  }

  // Each fake device connects with its own certificate, which certifies key(id).
  v1::Device::Stub* device(const std::string& id) {
    auto& stub = devices_[id];
    if (!stub) {
      const bool bad_id = !ValidateDeviceId(id).ok();  // cannot be in a certificate
      stub = v1::Device::NewStub(*MakeChannel(
          c_.address(), c_.DeviceTls(bad_id ? "some-device" : id, 3600, &key(id)), 64 << 20));
    }
    return stub.get();
  }
  // The device's SecAgg signing key (made on first use).
  const crypto::SigningKey& key(const std::string& id) {
    auto& k = keys_[id];
    if (!k) k = std::make_unique<crypto::SigningKey>(crypto::SigningKey::Generate());
    return *k;
  }

  // `key`: the SecAgg signing key the Join carries (none when null).
  grpc::Status Join(const std::string& id, uint32_t version = kProtocolVersion,
                    const crypto::SigningKey* key = nullptr) {
    v1::JoinRequest req;
    req.set_protocol_version(version);
    req.set_device_id(id);
    if (key != nullptr) req.set_signing_public_key(crypto::ToString(key->public_key()));
    auto* d = req.add_datasets();
    d->set_name("numbers");
    d->set_train_examples(10);
    v1::JoinResponse resp;
    grpc::ClientContext ctx;
    return device(id)->Join(&ctx, req, &resp);
  }

  v1::Task Fetch(const std::string& id) {
    v1::FetchTaskRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_device_id(id);
    req.set_wait_ms(10000);
    v1::SignedTask signed_task;
    grpc::ClientContext ctx;
    EXPECT_TRUE(device(id)->FetchTask(&ctx, req, &signed_task).ok());
    v1::Task task;  // these fake devices do not verify signatures (fleet-client does)
    EXPECT_TRUE(task.ParseFromString(signed_task.task()));
    return task;
  }

  // One SecAgg+ step of `task` for device `id`; blocks until its stage closes.
  StatusOr<v1::SecAggResponse> SecAgg(const std::string& id, const v1::Task& task,
                                      v1::SecAggRequest req) {
    req.set_protocol_version(kProtocolVersion);
    req.set_device_id(id);
    req.set_job_id(task.job_id());
    req.set_round(task.round());
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::SecAggResponse resp;
    grpc::Status s = device(id)->SecAgg(&ctx, req, &resp);
    if (!s.ok()) return FromGrpcStatus(s);
    return resp;
  }

  grpc::Status Push(const std::string& id, const std::string& job, uint32_t round, uint64_t n,
                    const std::string& payload, uint64_t declared = 0, size_t chunk = 7,
                    bool masked = false) {
    grpc::ClientContext ctx;
    v1::PushUpdateResponse resp;
    auto w = device(id)->PushUpdate(&ctx, &resp);
    v1::UpdateChunk c;
    auto* h = c.mutable_header();
    h->set_protocol_version(kProtocolVersion);
    h->set_device_id(id);
    h->set_job_id(job);
    h->set_round(round);
    h->set_num_examples(n);
    h->set_total_bytes(declared ? declared : payload.size());
    h->set_masked(masked);
    size_t off = 0;
    do {  // small chunks: reassembly is part of what is tested
      size_t len = std::min(chunk, payload.size() - off);
      c.set_data(payload.substr(off, len));
      off += len;
      if (!w->Write(c)) break;
      c.clear_header();
    } while (off < payload.size());
    w->WritesDone();
    return w->Finish();
  }

  v1::Admin::Stub* admin() { return admin_.get(); }

 private:
  Cluster& c_;
  std::map<std::string, std::unique_ptr<v1::Device::Stub>> devices_;
  std::map<std::string, std::unique_ptr<crypto::SigningKey>> keys_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

v1::JobSpec NumbersJob() {
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
  spec.set_rounds(2);
  spec.set_min_clients(3);
  spec.set_target_clients(8);
  spec.set_round_deadline_s(60);
  spec.set_eval_deadline_s(5);
  spec.set_seed(9);
  // These fake devices speak the plain protocol; secure rounds are covered by job_test.
  spec.mutable_secure_aggregation()->set_disabled(true);
  return spec;
}

TEST(DeviceProtocol, VersionMismatchIsFailedPreconditionNamingBothVersions) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  FakeDevices f(c);
  grpc::Status s = f.Join("old-device", 99);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("client speaks v99"), std::string::npos) << s.error_message();
  EXPECT_NE(s.error_message().find("coordinator speaks v3"), std::string::npos);
  EXPECT_EQ(f.Join("bad id with spaces").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(DeviceProtocol, FedAvgIsExactAndBadUpdatesLeaveTheAggregateUntouched) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  FakeDevices f(c);
  const std::vector<std::string> ids{"good-a", "good-b", "good-c", "bad-shape",
                                     "bad-nan", "bad-size",  "bad-decl"};
  for (const auto& id : ids) ASSERT_TRUE(f.Join(id).ok());

  grpc::ClientContext ctx;
  v1::SubmitJobRequest req;
  *req.mutable_spec() = NumbersJob();
  v1::JobStatus job;
  ASSERT_TRUE(f.admin()->SubmitJob(&ctx, req, &job).ok());

  const ModelLayout layout = *LayoutFor(req.spec().model());
  std::map<std::string, v1::Task> tasks;
  for (const auto& id : ids) {
    tasks[id] = f.Fetch(id);
    ASSERT_EQ(tasks[id].kind(), v1::Task::TRAIN) << id;
    ASSERT_EQ(tasks[id].round(), 1u);
  }
  // The initial model the coordinator sent decodes against the job's layout.
  ASSERT_TRUE(DecodeParameters(tasks["good-a"].parameters(), layout).ok());

  std::vector<std::vector<float>> good(3, std::vector<float>(layout.total));
  const std::vector<uint64_t> counts{10, 30, 60};
  for (size_t k = 0; k < 3; ++k) {
    for (size_t i = 0; i < layout.total; ++i) {
      good[k][i] = std::sin(static_cast<float>(i * (k + 1))) * static_cast<float>(k + 1);
    }
  }
  const std::string jid = job.id();
  // Wrong shape: an update for a model with a hidden layer.
  v1::ModelSpec other = req.spec().model();
  other.add_hidden(4);
  ModelLayout other_layout = *LayoutFor(other);
  std::vector<float> other_params(other_layout.total, 0.5f);
  grpc::Status s = f.Push("bad-shape", jid, 1, 10, EncodeParameters(other_layout, other_params.data()));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // NaN.
  std::vector<float> nan_params = good[0];
  nan_params[2] = std::nanf("");
  s = f.Push("bad-nan", jid, 1, 10, EncodeParameters(layout, nan_params.data()));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("non-finite"), std::string::npos) << s.error_message();
  // Over the size limit: refused before the bytes are read.
  s = f.Push("bad-size", jid, 1, 10, std::string(100, 'x'), /*declared=*/1u << 30);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Declared length does not match what was sent.
  std::string enc = EncodeParameters(layout, good[0].data());
  s = f.Push("bad-decl", jid, 1, 10, enc, enc.size() - 4);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  for (size_t k = 0; k < 3; ++k) {
    s = f.Push(ids[k], jid, 1, counts[k], EncodeParameters(layout, good[k].data()));
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  // Replay of an accepted update, a wrong round, an unknown job.
  s = f.Push("good-a", jid, 1, 10, EncodeParameters(layout, good[0].data()));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  s = f.Push("good-b", jid, 7, 10, EncodeParameters(layout, good[1].data()));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  s = f.Push("good-b", "job-nope", 1, 10, EncodeParameters(layout, good[1].data()));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);

  // bad-size and bad-decl never delivered an update; they stop polling and go offline, so the
  // round closes without waiting for its deadline. The three good devices fetch round 2, whose
  // model is the FedAvg of round 1.
  // All three poll at once, as live clients do (a device that neither polls nor heartbeats is
  // offline and not selected).
  auto fa = std::async(std::launch::async, [&] { return f.Fetch("good-a"); });
  auto fb = std::async(std::launch::async, [&] { return f.Fetch("good-b"); });
  auto fc = std::async(std::launch::async, [&] { return f.Fetch("good-c"); });
  v1::Task next = fa.get();
  EXPECT_EQ(fb.get().round(), 2u);
  EXPECT_EQ(fc.get().round(), 2u);
  ASSERT_EQ(next.kind(), v1::Task::TRAIN) << "round 2 did not start";
  ASSERT_EQ(next.round(), 2u);
  auto views = DecodeParameters(next.parameters(), layout);
  ASSERT_TRUE(views.ok()) << views.status().ToString();
  std::vector<float> got = Flatten(*views, layout);
  for (size_t i = 0; i < layout.total; ++i) {
    double expect = 0;
    for (size_t k = 0; k < 3; ++k) expect += static_cast<double>(counts[k]) * good[k][i];
    expect /= 100.0;
    EXPECT_NEAR(got[i], expect, 1e-6) << "parameter " << i;
  }

  grpc::ClientContext gctx;
  v1::GetJobRequest g;
  g.set_id(jid);
  v1::JobStatus status;
  ASSERT_TRUE(f.admin()->GetJob(&gctx, g, &status).ok());
  ASSERT_GE(status.rounds_size(), 1);
  EXPECT_EQ(status.rounds(0).participants(), 3u);
  EXPECT_EQ(status.rounds(0).rejected(), 2u);  // shape and NaN reached the aggregator's checks
  EXPECT_EQ(status.rounds(0).selected(), 7u);
  std::string log = c.coordinator().Log();
  EXPECT_NE(log.find("rejected update from bad-shape"), std::string::npos);
  EXPECT_NE(log.find("rejected update from bad-nan"), std::string::npos);
}

// The SecAgg signing key a device registers at Join is the one its certificate certifies: any
// other key is refused (so nobody holding a certificate can register, or swap in, a key its CA
// did not certify), and a changed key is accepted only with a new certificate, as Renew or
// re-enrollment issue it.
TEST(DeviceProtocol, JoinWithASigningKeyItsCertificateDoesNotCertifyIsRefused) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  const crypto::SigningKey certified = crypto::SigningKey::Generate();
  const crypto::SigningKey other = crypto::SigningKey::Generate();
  auto join = [&](const ClientTlsOptions& tls, const crypto::SigningKey& key) {
    auto stub = v1::Device::NewStub(*MakeChannel(c.address(), tls, 4 << 20));
    v1::JoinRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_device_id("ward3-bed12");
    req.set_signing_public_key(crypto::ToString(key.public_key()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::JoinResponse resp;
    return stub->Join(&ctx, req, &resp);
  };
  const ClientTlsOptions first = c.DeviceTls("ward3-bed12", 3600, &certified);
  grpc::Status s = join(first, other);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(s.error_message().find("SecAgg signing key that its certificate"), std::string::npos)
      << s.error_message();
  EXPECT_NE(s.error_message().find("a new signing key needs a new certificate"), std::string::npos)
      << s.error_message();
  ASSERT_TRUE(join(first, certified).ok());
  // Joined with the certified key; swapping it later on the same certificate is refused too.
  EXPECT_EQ(join(first, other).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // A new certificate for the new key, from Renew, carries the change.
  auto device = v1::Device::NewStub(*MakeChannel(c.address(), first, 4 << 20));
  ClientTlsOptions renewed = first;
  renewed.key_pem = *crypto::GenerateP256Key();
  v1::RenewRequest renew = MakeRenewRequest(
      "ward3-bed12",
      *crypto::MakeCsr(renewed.key_pem, "ward3-bed12", crypto::ToString(other.public_key())),
      first);
  grpc::ClientContext renew_ctx;
  v1::EnrollResponse issued;
  ASSERT_TRUE(device->Renew(&renew_ctx, renew, &issued).ok());
  renewed.cert_pem = issued.certificate_pem();
  EXPECT_TRUE(join(renewed, other).ok());
  EXPECT_NE(c.coordinator().Log().find("refused Join: Join of device 'ward3-bed12'"),
            std::string::npos);
}

// A device of a secure round that asks for the survivor set twice while the first call still
// waits gets ALREADY_EXISTS for the second (a waiting call is held per device, not per request),
// and the other is still answered when the stage closes. Four fake devices run SecAgg+ with the
// real client state machine; the fourth uploads its masked input only after the repeat was
// refused, so the stage is provably open at that moment.
TEST(DeviceProtocol, SecureRoundRefusesASecondWaitingCallFromADevice) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  FakeDevices f(c);
  const std::vector<std::string> ids{"sa-a", "sa-b", "sa-c", "sa-d"};
  for (const auto& id : ids) ASSERT_TRUE(f.Join(id, kProtocolVersion, &f.key(id)).ok());
  // Each device checks its neighbours' certificates against the fleet CA, as fleet-client does.
  auto verifier = std::move(crypto::CertificateVerifier::Create(ReadAll(c.ca()))).value();
  v1::JobSpec spec = NumbersJob();
  spec.set_rounds(1);
  spec.set_min_clients(4);
  spec.set_target_clients(4);
  *spec.mutable_secure_aggregation() = SecureAggregationDefaults();
  spec.mutable_secure_aggregation()->set_neighbours(4);
  spec.mutable_secure_aggregation()->set_threshold(3);
  grpc::ClientContext ctx;
  v1::SubmitJobRequest req;
  *req.mutable_spec() = spec;
  v1::JobStatus job;
  grpc::Status submitted = f.admin()->SubmitJob(&ctx, req, &job);
  ASSERT_TRUE(submitted.ok()) << submitted.error_message();
  const ModelLayout layout = *LayoutFor(spec.model());

  std::promise<void> repeat_refused;
  std::shared_future<void> refused = repeat_refused.get_future().share();
  grpc::Status second;
  auto device = [&](size_t i) -> Status {
    const std::string& id = ids[i];
    v1::Task task = f.Fetch(id);
    if (task.kind() != v1::Task::TRAIN || !task.has_secagg()) {
      return FailedPrecondition(id + ": no secure TRAIN task");
    }
    SecAggClient::Options options{task.job_id(), task.round(), id, task.secagg(),
                                  layout.total + kSecAggExtraElements};
    options.verifier = verifier.get();
    options.now = static_cast<int64_t>(std::time(nullptr));
    SecAggClient client(std::move(options), &f.key(id));
    SecAggTransport t;
    t.step = [&](v1::SecAggRequest r) -> StatusOr<v1::SecAggResponse> {
      if (i != 0 || !r.await_survivors()) return f.SecAgg(id, task, r);
      // Two identical calls at once: whichever arrives second is refused at once, the other
      // waits for the stage, which cannot close before sa-d uploads.
      auto call = [&] { return f.SecAgg(id, task, r); };
      std::future<StatusOr<v1::SecAggResponse>> a = std::async(std::launch::async, call);
      std::future<StatusOr<v1::SecAggResponse>> b = std::async(std::launch::async, call);
      auto ready = [](auto& fut) {
        return fut.wait_for(std::chrono::milliseconds(10)) == std::future_status::ready;
      };
      while (!ready(a) && !ready(b)) {
      }
      std::future<StatusOr<v1::SecAggResponse>>& waited = ready(a) ? b : a;
      second = ToGrpcStatus((ready(a) ? a : b).get().status());
      repeat_refused.set_value();
      return waited.get();
    };
    t.input = [&]() -> StatusOr<std::string> {
      const std::vector<float> zero(layout.total, 0.0f);
      const auto& q = task.secagg();
      crypto::Secret32 seed{};
      return QuantizeToWords(zero.data(), zero.size(), 10, 0, 0,
                             {q.clip(), q.value_bits(), q.max_weight(), q.modulus_bits()}, seed);
    };
    t.send_masked = [&](const std::string& masked) {
      if (i == 3) refused.wait();
      return FromGrpcStatus(
          f.Push(id, task.job_id(), task.round(), 0, masked, 0, 1 << 20, /*masked=*/true));
    };
    return RunSecAggClient(&client, t);
  };
  std::vector<std::future<Status>> runs;
  for (size_t i = 0; i < ids.size(); ++i) {
    runs.push_back(std::async(std::launch::async, device, i));
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    Status s = runs[i].get();
    EXPECT_TRUE(s.ok()) << ids[i] << ": " << s.ToString();
  }
  EXPECT_EQ(second.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_NE(second.error_message().find("already waits for MaskedInputCollection"),
            std::string::npos)
      << second.error_message();

  v1::JobStatus status;
  ASSERT_TRUE(WaitFor(
      [&] {
        grpc::ClientContext gctx;
        v1::GetJobRequest g;
        g.set_id(job.id());
        return f.admin()->GetJob(&gctx, g, &status).ok() &&
               status.state() == v1::JobStatus::SUCCEEDED;
      },
      std::chrono::seconds(30)))
      << status.DebugString();
  ASSERT_EQ(status.rounds_size(), 1);
  EXPECT_TRUE(status.rounds(0).secure());
  EXPECT_EQ(status.rounds(0).participants(), 4u);
}

// Text a device sends is stored and shown to admins (device list, logs): control characters and
// oversized fields are refused at Join with a message naming the field, and a decline reason,
// which is only logged, stays on its one log line.
TEST(DeviceProtocol, DeviceTextCannotForgeLogLinesOrDriveATerminal) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  FakeDevices f(c);
  auto join = [&](const std::string& id, const std::function<void(v1::JoinRequest*)>& edit) {
    v1::JoinRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_device_id(id);
    req.set_software_version("fleet-client 1.0");
    auto* d = req.add_datasets();
    d->set_name("numbers");
    d->set_train_examples(10);
    edit(&req);
    v1::JoinResponse resp;
    grpc::ClientContext ctx;
    return f.device(id)->Join(&ctx, req, &resp);
  };
  struct Case {
    std::string id, error;
    std::function<void(v1::JoinRequest*)> edit;
  };
  const std::vector<Case> cases = {
      {"t-osc", "label 'site' contains control characters or backslashes: '\\x1b]0;pwned\\x07'",
       [](v1::JoinRequest* r) { (*r->mutable_labels())["site"] = "\x1b]0;pwned\x07"; }},
      {"t-newline", "label key contains control characters",
       [](v1::JoinRequest* r) { (*r->mutable_labels())["a\nb"] = "x"; }},
      {"t-c1", "software_version contains control characters",
       [](v1::JoinRequest* r) {
         r->set_software_version(
             "1.0 \xc2\x9b"
             "2J");
       }},
      {"t-long", "label 'site' is 257 bytes (max 256)",
       [](v1::JoinRequest* r) { (*r->mutable_labels())["site"] = std::string(257, 'x'); }},
      {"t-many", "too many labels (max 64)",
       [](v1::JoinRequest* r) {
         for (int i = 0; i < 65; ++i) (*r->mutable_labels())["k" + std::to_string(i)] = "v";
       }},
      {"t-dataset", "dataset name is empty",
       [](v1::JoinRequest* r) { r->mutable_datasets(0)->set_name(""); }},
  };
  for (const Case& k : cases) {
    grpc::Status s = join(k.id, k.edit);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << k.id;
    EXPECT_NE(s.error_message().find("Join of device '" + k.id + "': " + k.error),
              std::string::npos)
        << s.error_message();
  }
  auto list = c.Fleetctl({"device", "list"});
  for (const Case& k : cases) EXPECT_EQ(list.output.find(k.id), std::string::npos) << list.output;
  // Nothing refused made it into the log raw.
  EXPECT_EQ(c.coordinator().Log().find('\x1b'), std::string::npos);

  // A decline reason with a newline and a fake log line in it.
  for (const char* id : {"d-1", "d-2", "d-3"}) {
    ASSERT_TRUE(
        join(id, [](v1::JoinRequest* r) { (*r->mutable_labels())["site"] = "ward-3"; }).ok());
  }
  list = c.Fleetctl({"device", "list"});
  EXPECT_NE(list.output.find("d-1"), std::string::npos) << list.output;
  grpc::ClientContext ctx;
  v1::SubmitJobRequest req;
  *req.mutable_spec() = NumbersJob();
  v1::JobStatus job;
  ASSERT_TRUE(f.admin()->SubmitJob(&ctx, req, &job).ok());
  v1::Task task = f.Fetch("d-1");
  ASSERT_EQ(task.kind(), v1::Task::TRAIN);
  {
    grpc::ClientContext push_ctx;
    v1::PushUpdateResponse resp;
    auto w = f.device("d-1")->PushUpdate(&push_ctx, &resp);
    v1::UpdateChunk chunk;
    auto* h = chunk.mutable_header();
    h->set_protocol_version(kProtocolVersion);
    h->set_device_id("d-1");
    h->set_job_id(task.job_id());
    h->set_round(task.round());
    h->set_error("no data\n2026-01-01T00:00:00.000Z ERROR coordinator: forged \x1b[31mline");
    ASSERT_TRUE(w->Write(chunk));
    w->WritesDone();
    ASSERT_TRUE(w->Finish().ok());
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        return c.coordinator().Log().find(
                   "could not train: no data\\n2026-01-01T00:00:00.000Z "
                   "ERROR coordinator: forged \\x1b[31mline") != std::string::npos;
      },
      std::chrono::seconds(10)))
      << c.coordinator().Log();
  const std::string log = c.coordinator().Log();
  EXPECT_EQ(log.find("\n2026-01-01T00:00:00.000Z"), std::string::npos) << log;
  EXPECT_EQ(log.find('\x1b'), std::string::npos);
}

}  // namespace
}  // namespace fleet::testing
