// fleet-sim: thousands of lightweight virtual devices in one process, speaking the real device
// protocol over real gRPC with mTLS to a real coordinator. Each virtual device enrolls with a
// bootstrap token (its own P-256 key and certificate, kept in --state-dir so a second run needs
// no token uses), joins, heartbeats, and keeps one FetchTask long poll open. TRAIN tasks are
// answered with the global model plus small deterministic noise (no LibTorch: the point is the
// coordinator's load, not learning); EVALUATE tasks with fixed metrics. Secure-aggregation tasks
// are declined. Task signatures are not checked (fleet-client does that): the signed bytes of
// each SignedTask are parsed as they come.
//
// Threads: gRPC's own callback threads for heartbeats and long polls (they never block), plus
// --workers threads for enrollment, Join and uploads.
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "client/identity.h"
#include "client/update_upload.h"
#include "common/clock.h"
#include "common/grpc_util.h"
#include "common/log.h"
#include "common/model_layout.h"
#include "common/signals.h"
#include "common/tensor_codec.h"
#include "crypto/random.h"
#include "proto/fleet.grpc.pb.h"

namespace fleet {
namespace {

constexpr int kExitOk = 0, kExitError = 1, kExitUsage = 2;

struct SimOptions {
  std::string bootstrap;
  std::string state_dir;
  std::string prefix = "sim";
  std::string dataset = "uci-har";
  uint32_t devices = 100;
  uint64_t examples = 100;
  int64_t eval_examples = -1;  // -1: examples / 4
  uint32_t heartbeat_ms = 0;  // 0: what the coordinator says at Join
  uint32_t poll_wait_ms = 30000;
  uint32_t workers = 4;
  uint32_t duration_s = 0;    // 0: until SIGINT/SIGTERM
  std::string stats_file;
};

// Every virtual device is always ready to train.
void SetEligibility(v1::Eligibility* e) {
  e->set_on_power(true);
  e->set_battery_percent(100);
  e->set_idle(true);
  e->set_free_memory_mb(1024);
}

struct Stats {
  std::atomic<uint64_t> enrolled{0}, joined{0}, heartbeats{0}, heartbeat_errors{0}, polls{0},
      trained{0}, evaluated{0}, declined{0}, update_errors{0}, rejoins{0};
};

struct VirtualDevice {
  uint32_t index = 0;
  std::string id;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Device::Stub> stub;
  std::string signing_public_key;  // certified in its certificate; sent at Join
  std::atomic<bool> joined{false};
};

class Simulator {
 public:
  Simulator(SimOptions o, Bootstrap b) : o_(std::move(o)), boot_(std::move(b)) {}

  Status Run() {
    for (uint32_t i = 0; i < o_.workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
    devices_.resize(o_.devices);
    for (uint32_t i = 0; i < o_.devices; ++i) {
      devices_[i] = std::make_unique<VirtualDevice>();
      devices_[i]->index = i;
      devices_[i]->id = o_.prefix + "-" + std::to_string(i);
      Submit([this, d = devices_[i].get()] { Bringup(d); });
    }
    std::thread heartbeats([this] { HeartbeatLoop(); });
    const auto started = std::chrono::steady_clock::now();
    uint64_t last_hb = 0;
    auto last = started;
    while (!Stopping()) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, std::chrono::milliseconds(200), [&] { return stop_; });
      }
      SubmitDueRetries();
      const auto now = std::chrono::steady_clock::now();
      if (o_.duration_s > 0 && now - started >= std::chrono::seconds(o_.duration_s)) Stop();
      if (now - last < std::chrono::seconds(5) && !Stopping()) continue;
      const double dt = std::chrono::duration<double>(now - last).count();
      const uint64_t hb = stats_.heartbeats.load();
      hb_rate_ = dt > 0 ? static_cast<double>(hb - last_hb) / dt : 0;
      last_hb = hb;
      last = now;
      FLEET_LOG(Info) << "fleet-sim: " << stats_.joined.load() << "/" << o_.devices
                      << " joined, " << static_cast<uint64_t>(hb_rate_) << " heartbeats/s, "
                      << stats_.polls.load() << " polls answered, " << stats_.trained.load()
                      << " updates sent (" << stats_.update_errors.load() << " refused), "
                      << stats_.evaluated.load() << " evaluations";
      WriteStats();
    }
    heartbeats.join();
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.clear();
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
    // Outstanding polls end at their deadline or when the channels go; wait for them.
    for (int i = 0; i < 400 && outstanding_.load() > 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    WriteStats();
    return OkStatus();
  }

  void Stop() {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
    for (auto* ctx : open_polls_) ctx->TryCancel();
  }

 private:
  bool Stopping() {
    std::lock_guard<std::mutex> lock(mu_);
    return stop_;
  }

  void Submit(std::function<void()> job) {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    queue_.push_back(std::move(job));
    cv_.notify_one();
  }

  void WorkerLoop() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (stop_) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      job();
    }
  }

  // Credentials (stored or freshly enrolled), channel, Join, then the first long poll.
  void Bringup(VirtualDevice* d) {
    if (!d->stub) {
      ClientConfig c;
      c.device_id = d->id;
      c.state_dir = o_.state_dir + "/" + d->id;
      const int64_t now = UnixMillis() / 1000;
      StatusOr<DeviceCredentials> creds = LoadCredentials(c.state_dir, d->id, now);
      if (!creds.ok()) creds = EnrollDevice(c, boot_, now);
      if (!creds.ok()) {
        FLEET_LOG(Error) << "fleet-sim: " << d->id << ": " << creds.status().message();
        Retry(d);
        return;
      }
      stats_.enrolled++;
      StatusOr<std::shared_ptr<grpc::Channel>> ch =
          MakeChannel(boot_.coordinator, creds->Tls(boot_.server_name), 64 << 20);
      if (!ch.ok()) {
        FLEET_LOG(Error) << "fleet-sim: " << ch.status().message();
        return;
      }
      d->channel = *ch;
      d->stub = v1::Device::NewStub(d->channel);
      // The coordinator accepts at Join only the key the certificate certifies.
      if (creds->secagg_key) {
        d->signing_public_key = crypto::ToString(creds->secagg_key->public_key());
      }
    }
    v1::JoinRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_device_id(d->id);
    req.set_software_version("fleet-sim/0.1.0");
    req.set_signing_public_key(d->signing_public_key);
    auto* ds = req.add_datasets();
    ds->set_name(o_.dataset);
    ds->set_train_examples(o_.examples);
    ds->set_eval_examples(o_.eval_examples < 0 ? o_.examples / 4
                                               : static_cast<uint64_t>(o_.eval_examples));
    SetEligibility(req.mutable_eligibility());
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    v1::JoinResponse resp;
    grpc::Status s = d->stub->Join(&ctx, req, &resp);
    if (!s.ok()) {
      FLEET_LOG(Warn) << "fleet-sim: " << d->id << ": Join: " << s.error_message();
      Retry(d);
      return;
    }
    if (o_.heartbeat_ms == 0) heartbeat_ms_ = std::max<uint32_t>(100, resp.heartbeat_interval_ms());
    if (!d->joined.exchange(true)) stats_.joined++;
    Poll(d);
  }

  // Bring the device up again in 0.5-1.5 s (spread, so a coordinator restart does not bring
  // every device back in the same instant).
  void Retry(VirtualDevice* d) {
    std::lock_guard<std::mutex> lock(mu_);
    retries_.emplace(std::chrono::steady_clock::now() +
                         std::chrono::milliseconds(500 + (d->index * 7919) % 1000),
                     d);
  }

  void SubmitDueRetries() {
    std::vector<VirtualDevice*> due;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const auto now = std::chrono::steady_clock::now();
      while (!retries_.empty() && retries_.begin()->first <= now) {
        due.push_back(retries_.begin()->second);
        retries_.erase(retries_.begin());
      }
    }
    for (VirtualDevice* d : due) Submit([this, d] { Bringup(d); });
  }

  void Rejoin(VirtualDevice* d) {
    if (d->joined.exchange(false)) stats_.joined--;
    stats_.rejoins++;
    Retry(d);
  }

  // One FetchTask long poll, answered on a gRPC thread; work goes to the workers.
  void Poll(VirtualDevice* d) {
    struct Call {
      grpc::ClientContext ctx;
      v1::FetchTaskRequest req;
      v1::SignedTask task;
    };
    auto* call = new Call;
    call->req.set_protocol_version(kProtocolVersion);
    call->req.set_device_id(d->id);
    call->req.set_wait_ms(o_.poll_wait_ms);
    call->ctx.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::milliseconds(o_.poll_wait_ms + 10000));
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) {
        delete call;
        return;
      }
      open_polls_.insert(&call->ctx);
    }
    outstanding_++;
    d->stub->async()->FetchTask(&call->ctx, &call->req, &call->task,
                                [this, d, call](grpc::Status s) {
                                  {
                                    std::lock_guard<std::mutex> lock(mu_);
                                    open_polls_.erase(&call->ctx);
                                  }
                                  OnPolled(d, s, std::move(call->task));
                                  delete call;
                                  outstanding_--;
                                });
  }

  void OnPolled(VirtualDevice* d, const grpc::Status& s, v1::SignedTask signed_task) {
    if (Stopping()) return;
    if (!s.ok()) {
      if (s.error_code() == grpc::StatusCode::NOT_FOUND ||
          s.error_code() == grpc::StatusCode::UNAVAILABLE) {
        Rejoin(d);
      } else {
        Retry(d);
      }
      return;
    }
    stats_.polls++;
    v1::Task task;
    if (signed_task.task().empty() || !task.ParseFromString(signed_task.task()) ||
        task.kind() == v1::Task::NONE) {
      Poll(d);
      return;
    }
    auto shared = std::make_shared<v1::Task>(std::move(task));
    Submit([this, d, shared] {
      HandleTask(d, *shared);
      Poll(d);
    });
  }

  void HandleTask(VirtualDevice* d, const v1::Task& task) {
    if (task.kind() == v1::Task::EVALUATE) {
      v1::MetricsReport r;
      r.set_protocol_version(kProtocolVersion);
      r.set_device_id(d->id);
      r.set_job_id(task.job_id());
      r.set_round(task.round());
      r.set_num_examples(o_.examples / 4);
      r.set_loss(1.0);
      r.set_accuracy(0.5);
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
      v1::ReportMetricsResponse resp;
      if (d->stub->ReportMetrics(&ctx, r, &resp).ok()) stats_.evaluated++;
      return;
    }
    v1::UpdateHeader h;
    h.set_protocol_version(kProtocolVersion);
    h.set_device_id(d->id);
    h.set_job_id(task.job_id());
    h.set_round(task.round());
    std::string payload;
    StatusOr<ModelLayout> layout = LayoutFor(task.model());
    StatusOr<std::vector<TensorView>> views =
        layout.ok() ? DecodeParameters(task.parameters(), *layout)
                    : StatusOr<std::vector<TensorView>>(layout.status());
    if (task.has_secagg()) {
      h.set_error("fleet-sim devices do not run secure aggregation");
      stats_.declined++;
    } else if (!views.ok()) {
      h.set_error("fleet-sim: " + views.status().message());
      stats_.declined++;
    } else {
      std::vector<float> params = Flatten(*views, *layout);
      // Deterministic per (device, round) noise of +-0.01: a distinct update per device.
      uint64_t x = (uint64_t{d->index} + 1) * 0x9E3779B97F4A7C15ULL ^ task.round();
      for (float& p : params) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p += static_cast<float>(static_cast<double>(x >> 40) / double(1 << 24) - 0.5) * 0.02f;
      }
      payload = EncodeParameters(*layout, params.data());
      h.set_num_examples(o_.examples);
      h.set_train_loss(1.0);
      h.set_val_accuracy(0.5);
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
    grpc::Status s = PushUpdateChunks(d->stub.get(), &ctx, h, payload, size_t{1} << 20);
    if (s.ok() && h.error().empty()) {
      stats_.trained++;
    } else if (!s.ok()) {
      stats_.update_errors++;
    }
  }

  // Spreads every device's heartbeat evenly over the interval.
  void HeartbeatLoop() {
    uint32_t i = 0;
    while (!Stopping()) {
      const uint32_t interval = o_.heartbeat_ms ? o_.heartbeat_ms : heartbeat_ms_.load();
      const auto step = std::chrono::microseconds(
          std::max<int64_t>(1, int64_t{interval} * 1000 / std::max<uint32_t>(1, o_.devices)));
      // Batches of devices per wake-up keep the loop cheap at 10,000 devices.
      const uint32_t batch = std::max<uint32_t>(1, o_.devices / std::max<uint32_t>(1, interval));
      for (uint32_t k = 0; k < batch; ++k, i = (i + 1) % o_.devices) {
        VirtualDevice* d = devices_[i].get();
        if (!d->joined.load() || !d->stub) continue;
        struct Call {
          grpc::ClientContext ctx;
          v1::HeartbeatRequest req;
          v1::HeartbeatResponse resp;
        };
        auto* call = new Call;
        call->req.set_protocol_version(kProtocolVersion);
        call->req.set_device_id(d->id);
        SetEligibility(call->req.mutable_eligibility());
        call->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        outstanding_++;
        d->stub->async()->Heartbeat(&call->ctx, &call->req, &call->resp,
                                    [this, call](grpc::Status s) {
                                      if (s.ok()) {
                                        stats_.heartbeats++;
                                      } else {
                                        stats_.heartbeat_errors++;
                                      }
                                      delete call;
                                      outstanding_--;
                                    });
      }
      std::this_thread::sleep_for(step * batch);
    }
  }

  void WriteStats() {
    if (o_.stats_file.empty()) return;
    std::ofstream out(o_.stats_file + ".tmp");
    out << "{\"devices\": " << o_.devices << ", \"enrolled\": " << stats_.enrolled.load()
        << ", \"joined\": " << stats_.joined.load()
        << ", \"heartbeats\": " << stats_.heartbeats.load()
        << ", \"heartbeats_per_s\": " << static_cast<uint64_t>(hb_rate_.load())
        << ", \"heartbeat_errors\": " << stats_.heartbeat_errors.load()
        << ", \"polls\": " << stats_.polls.load() << ", \"updates\": " << stats_.trained.load()
        << ", \"update_errors\": " << stats_.update_errors.load()
        << ", \"evaluations\": " << stats_.evaluated.load()
        << ", \"declined\": " << stats_.declined.load()
        << ", \"rejoins\": " << stats_.rejoins.load() << "}\n";
    out.close();
    std::rename((o_.stats_file + ".tmp").c_str(), o_.stats_file.c_str());
  }

  const SimOptions o_;
  const Bootstrap boot_;
  Stats stats_;
  std::vector<std::unique_ptr<VirtualDevice>> devices_;
  std::atomic<uint32_t> heartbeat_ms_{1000};
  std::atomic<double> hb_rate_{0};
  std::atomic<int64_t> outstanding_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::set<grpc::ClientContext*> open_polls_;
  std::multimap<std::chrono::steady_clock::time_point, VirtualDevice*> retries_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace
}  // namespace fleet

int main(int argc, char** argv) {
  fleet::SimOptions o;
  CLI::App app{
      "fleet-sim: thousands of virtual devices in one process over real gRPC + mTLS, for load "
      "and scale tests of fleet-coordinator. Devices enroll with the bootstrap file's token, "
      "join, heartbeat, long-poll, and answer TRAIN tasks with the global model plus noise "
      "(plain aggregation only; secure tasks are declined)."};
  app.add_option("--bootstrap", o.bootstrap, "bootstrap file: coordinator, ca_cert, token")
      ->required();
  app.add_option("--state-dir", o.state_dir, "where device keys and certificates are kept")
      ->required();
  app.add_option("--devices", o.devices, "virtual devices")->check(CLI::Range(1u, 100000u));
  app.add_option("--prefix", o.prefix, "device ids are PREFIX-0 .. PREFIX-(N-1)");
  app.add_option("--dataset", o.dataset, "dataset the devices advertise");
  app.add_option("--examples", o.examples, "training examples each device reports");
  app.add_option("--eval-examples", o.eval_examples,
                 "evaluation examples each device reports (default examples/4; 0: no EVALUATE)");
  app.add_option("--heartbeat-ms", o.heartbeat_ms, "heartbeat interval (0: the coordinator's)");
  app.add_option("--poll-wait-ms", o.poll_wait_ms, "FetchTask long-poll wait")
      ->check(CLI::Range(100u, 30000u));
  app.add_option("--workers", o.workers, "threads for enrollment, Join and uploads")
      ->check(CLI::Range(1u, 256u));
  app.add_option("--duration-s", o.duration_s, "stop after this long (0: on SIGINT/SIGTERM)");
  app.add_option("--stats-file", o.stats_file, "JSON counters, rewritten every 5 s");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? fleet::kExitOk : fleet::kExitUsage;
  }
  if (!fleet::crypto::Init()) {
    std::fprintf(stderr, "fleet-sim: libsodium failed to initialize\n");
    return fleet::kExitError;
  }
  if (fleet::Status t = fleet::RequireTls13(); !t.ok()) {
    std::fprintf(stderr, "fleet-sim: %s\n", t.message().c_str());
    return fleet::kExitError;
  }
  fleet::StatusOr<fleet::Bootstrap> b = fleet::LoadBootstrap(o.bootstrap);
  if (!b.ok()) {
    std::fprintf(stderr, "fleet-sim: %s\n", b.status().message().c_str());
    return fleet::kExitUsage;
  }
  fleet::Simulator sim(o, *b);
  fleet::HandleTerminationSignals([&](int) { sim.Stop(); });
  fleet::Status s = sim.Run();
  if (!s.ok()) {
    std::fprintf(stderr, "fleet-sim: %s\n", s.message().c_str());
    return fleet::kExitError;
  }
  return fleet::kExitOk;
}
