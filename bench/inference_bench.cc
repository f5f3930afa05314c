// Inference and control benchmark (scripts/bench.sh inference). Prints one JSON object:
//  - batch-1 latency (p50/p99 us) of the HAR MLP through InferenceModel::Run, idle and while
//    local training epochs run on another thread at training priority (SCHED_IDLE, as in
//    fleet-client), next to a floor measured in the same run: the same layers as bare
//    preallocated addmm/relu calls (no module dispatch, no copies);
//  - MQTT-in -> command-out p99 (ms) through a real mosquitto broker and the real control loop
//    (schema, buffer, preprocessing, inference, rules, publish), idle and while training, next
//    to the broker's own round trip (an echo client) as the floor;
//  - the process's peak RSS: it holds what fleet-client holds while training and controlling.
//
// usage: inference_bench <HAR subject file> <scratch dir>   (subject-3.txt must sit beside it)
#include <mosquitto.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/control_stack.h"
#include "client/control/control_loop.h"
#include "client/control/inference_model.h"
#include "client/control/mqtt_link.h"
#include "client/control/sample_buffer.h"
#include "client/data_source.h"
#include "client/trainer.h"
#include "common/model_layout.h"

using namespace fleet;
using namespace fleet::control;
using Clock = std::chrono::steady_clock;

namespace {

double Pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1))];
}

v1::ModelSpec HarMlp() {
  v1::ModelSpec m;
  m.set_type("mlp");
  m.set_task("classification");
  m.set_input_dim(561);
  m.add_hidden(128);
  m.set_output_dim(6);
  m.set_activation("relu");
  return m;
}

// A HAR-style sequence model: 128 steps of 9 inertial channels (2.56 s at 50 Hz, the window of
// the UCI HAR raw signals), two conv layers.
v1::ModelSpec HarCnn() {
  v1::ModelSpec m;
  m.set_type("cnn1d");
  m.set_task("classification");
  m.set_input_dim(128 * 9);
  m.set_channels(9);
  m.set_kernel_size(5);
  m.add_hidden(32);
  m.add_hidden(32);
  m.set_output_dim(6);
  m.set_activation("relu");
  return m;
}

// Keeps local training epochs running (at training priority) until stopped.
class BackgroundTraining {
 public:
  BackgroundTraining(const v1::ModelSpec& spec, const Dataset& data) {
    thread_ = std::thread([this, spec, &data] {
      ModelLayout layout = *LayoutFor(spec);
      std::vector<float> params = InitialParameters(layout, 1);
      v1::TrainSpec train;
      train.set_local_epochs(1);
      train.set_batch_size(32);
      train.set_learning_rate(0.001f);
      train.set_optimizer("adam");
      (void)RunAtTrainingPriority([&] {
        while (!stop_) {
          std::vector<TensorView> views;
          for (const TensorSlot& t : layout.tensors) views.push_back({&t, params.data() + t.offset});
          auto r = TrainLocal(spec, train, layout, views, data, Dataset{}, epochs_.load());
          if (r.ok()) params = r->params;
          ++epochs_;
        }
        return OkStatus();
      });
    });
    while (epochs_ == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ~BackgroundTraining() {
    stop_ = true;
    thread_.join();
  }
  uint64_t epochs() const { return epochs_; }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> epochs_{0};
  std::thread thread_;
};

// p50/p99 of InferenceModel::Run over `iters` rows of `data`.
std::pair<double, double> ModelLatency(InferenceModel& m, const Dataset& data, int iters) {
  std::vector<float> out(m.output_dim());
  std::vector<double> us;
  us.reserve(iters);
  for (int i = 0; i < iters; ++i) {
    const float* row = &data.features[(i % data.rows) * data.cols];
    auto t0 = Clock::now();
    (void)m.Run(row, out.data());
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  return {Pct(us, 50), Pct(us, 99)};
}

// The floor: the MLP's arithmetic as bare preallocated ATen calls.
double FloorLatencyP50(const Dataset& data, int iters) {
  torch::NoGradGuard no_grad;
  torch::Tensor w0 = torch::randn({561, 128}), b0 = torch::randn({1, 128});
  torch::Tensor w1 = torch::randn({128, 6}), b1 = torch::randn({1, 6});
  torch::Tensor x = torch::empty({1, 561}), h = torch::empty({1, 128}), y = torch::empty({1, 6});
  std::vector<double> us;
  for (int i = 0; i < iters; ++i) {
    std::memcpy(x.data_ptr<float>(), &data.features[(i % data.rows) * data.cols], 561 * 4);
    auto t0 = Clock::now();
    torch::addmm_out(h, b0, x, w0);
    h.relu_();
    torch::addmm_out(y, b1, h, w1);
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  return Pct(us, 50);
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// A raw libmosquitto client recording arrival times of messages by their "ts_ms"/"ts" key.
class Timer {
 public:
  Timer(int port, const std::string& sub, const std::string& key) : key_(key), sub_(sub) {
    m_ = mosquitto_new(nullptr, true, this);
    mosquitto_int_option(m_, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_connect_callback_set(m_, [](mosquitto* m, void* self, int) {
      mosquitto_subscribe(m, nullptr, static_cast<Timer*>(self)->sub_.c_str(), 1);
      static_cast<Timer*>(self)->up_ = true;
    });
    mosquitto_message_callback_set(m_, [](mosquitto*, void* self, const mosquitto_message* msg) {
      auto* t = static_cast<Timer*>(self);
      auto now = Clock::now();
      nlohmann::json j = nlohmann::json::parse(
          std::string(static_cast<const char*>(msg->payload), msg->payloadlen), nullptr, false);
      if (j.is_discarded() || !j.contains(t->key_)) return;
      std::lock_guard<std::mutex> lock(t->mu_);
      t->arrived_[j[t->key_].get<int64_t>()] = now;
    });
    mosquitto_loop_start(m_);
    mosquitto_connect(m_, "127.0.0.1", port, 10);
    while (!up_) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // subscription settles
  }
  ~Timer() {
    mosquitto_disconnect(m_);
    mosquitto_loop_stop(m_, false);
    mosquitto_destroy(m_);
  }
  void Publish(const std::string& topic, const std::string& payload) {
    mosquitto_publish(m_, nullptr, topic.c_str(), static_cast<int>(payload.size()), payload.data(),
                      1, false);
  }
  std::map<int64_t, Clock::time_point> arrived() {
    std::lock_guard<std::mutex> lock(mu_);
    return arrived_;
  }

 private:
  std::string key_, sub_;
  mosquitto* m_;
  std::atomic<bool> up_{false};
  std::mutex mu_;
  std::map<int64_t, Clock::time_point> arrived_;
};

// Publishes `n` messages at `hz` to `topic` (payload from `make(i)`, keyed by i >= first) and returns the
// p99 in ms from publish to arrival of the message keyed i on the timer's subscription.
double RoundTripP99(Timer& t, const std::string& topic, int64_t first, int n, double hz,
                    const std::function<std::string(int64_t)>& make) {
  std::map<int64_t, Clock::time_point> sent;
  auto next = Clock::now();
  for (int64_t i = first; i < first + n; ++i) {
    std::this_thread::sleep_until(next);
    next += std::chrono::microseconds(static_cast<int64_t>(1e6 / hz));
    std::string payload = make(i);
    sent[i] = Clock::now();
    t.Publish(topic, payload);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto got = t.arrived();
  std::vector<double> ms;
  for (const auto& [k, at] : got) {
    auto s = sent.find(k);
    if (s != sent.end()) ms.push_back(std::chrono::duration<double, std::milli>(at - s->second).count());
  }
  return Pct(ms, 99);
}

double PeakRssMb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: inference_bench <HAR subject file> <scratch dir>\n");
    return 2;
  }
  ConfigureTorchThreads(1);
  DatasetSpec ds;
  ds.name = "uci-har";
  ds.label_offset = -1;
  DataFileSpec f;
  f.path = argv[1];
  f.csv = false;
  f.subject = "0";
  f.label = "1";
  f.features_rest = true;
  ds.files.push_back(f);
  StatusOr<Dataset> data = LoadDataset(ds);
  if (!data.ok()) {
    std::fprintf(stderr, "inference_bench: %s\n", data.status().message().c_str());
    return 1;
  }
  const v1::ModelSpec spec = HarMlp();
  ModelLayout layout = *LayoutFor(spec);
  auto model = *InferenceModel::Create(spec, InitialParameters(layout, 3), "bench");
  constexpr int kIters = 20000;
  ModelLatency(*model, *data, 2000);  // warm-up
  const double floor_p50 = FloorLatencyP50(*data, kIters);
  auto [p50, p99] = ModelLatency(*model, *data, kIters);
  // The sequence model on synthetic windows (latency does not depend on the values).
  const v1::ModelSpec cnn_spec = HarCnn();
  auto cnn = *InferenceModel::Create(cnn_spec, InitialParameters(*LayoutFor(cnn_spec), 4), "cnn");
  Dataset seq;
  seq.rows = 64;
  seq.cols = cnn_spec.input_dim();
  for (size_t i = 0; i < seq.rows * seq.cols; ++i) {
    seq.features.push_back(std::sin(0.01f * static_cast<float>(i)));
  }
  ModelLatency(*cnn, seq, 500);  // warm-up
  auto [cnn_p50, cnn_p99] = ModelLatency(*cnn, seq, kIters / 4);
  double p50_training, p99_training, cnn_p99_training;
  uint64_t epochs;
  {
    BackgroundTraining training(spec, *data);
    std::tie(p50_training, p99_training) = ModelLatency(*model, *data, kIters);
    cnn_p99_training = ModelLatency(*cnn, seq, kIters / 4).second;
    epochs = training.epochs();
  }

  // int8 Linear layers: latency, and the accuracy change of a trained model on held-out rows.
  // Trained on this subject, measured on another (subject-3 beside it): a held-out person.
  const Dataset& train_rows = *data;
  DatasetSpec other = ds;
  other.files[0].path = std::string(argv[1]).substr(0, std::string(argv[1]).rfind('/')) +
                        "/subject-3.txt";
  StatusOr<Dataset> held_out = LoadDataset(other);
  if (!held_out.ok()) {
    std::fprintf(stderr, "inference_bench: %s\n", held_out.status().message().c_str());
    return 1;
  }
  const Dataset& test_rows = *held_out;
  v1::TrainSpec ts;
  ts.set_local_epochs(10);
  ts.set_batch_size(32);
  ts.set_learning_rate(0.001f);
  ts.set_optimizer("adam");
  std::vector<float> init = InitialParameters(layout, 5);
  std::vector<TensorView> init_views;
  for (const TensorSlot& t : layout.tensors) init_views.push_back({&t, init.data() + t.offset});
  StatusOr<TrainResult> trained = TrainLocal(spec, ts, layout, init_views, train_rows, Dataset{}, 5);
  if (!trained.ok()) return 1;
  auto f32 = *InferenceModel::Create(spec, trained->params, "f32");
  auto i8 = *InferenceModel::Create(spec, trained->params, "int8", /*int8=*/true);
  int f32_right = 0, i8_right = 0, agree = 0;
  for (size_t r = 0; r < test_rows.rows; ++r) {
    float a[6], b[6];
    (void)f32->Run(&test_rows.features[r * 561], a);
    (void)i8->Run(&test_rows.features[r * 561], b);
    const int pa = static_cast<int>(std::max_element(a, a + 6) - a);
    const int pb = static_cast<int>(std::max_element(b, b + 6) - b);
    f32_right += pa == static_cast<int>(test_rows.labels[r]);
    i8_right += pb == static_cast<int>(test_rows.labels[r]);
    agree += pa == pb;
  }
  ModelLatency(*i8, *data, 2000);  // warm-up
  auto [i8_p50, i8_p99] = ModelLatency(*i8, *data, kIters);
  const double n_test = static_cast<double>(test_rows.rows);

  // MQTT: broker, echo floor, then the control loop end to end.
  const int port = FreePort();
  const std::string dir = argv[2];
  std::ofstream(dir + "/mosquitto.conf") << "listener " << port << " 127.0.0.1\nallow_anonymous true\n"
                                         << "set_tcp_nodelay true\n";
  pid_t broker = fork();
  if (broker == 0) {
    freopen((dir + "/mosquitto.log").c_str(), "w", stderr);
    execl("/usr/sbin/mosquitto", "mosquitto", "-c", (dir + "/mosquitto.conf").c_str(), nullptr);
    _exit(127);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  mosquitto_lib_init();
  auto sensor_payload = [&](int64_t i) {
    nlohmann::json j;
    j["ts"] = i;
    j["features"] = std::vector<float>(&data->features[(i % data->rows) * 561],
                                       &data->features[(i % data->rows) * 561] + 561);
    return j.dump();
  };
  // Floor: the broker's own round trip, through a client that echoes at once.
  mosquitto* echo = mosquitto_new("bench-echo", true, nullptr);
  mosquitto_int_option(echo, MOSQ_OPT_TCP_NODELAY, 1);
  mosquitto_connect_callback_set(echo, [](mosquitto* m, void*, int) {
    mosquitto_subscribe(m, nullptr, "bench/echo-in", 1);
  });
  mosquitto_message_callback_set(echo, [](mosquitto* m, void*, const mosquitto_message* msg) {
    mosquitto_publish(m, nullptr, "bench/echo-out", msg->payloadlen, msg->payload, 1, false);
  });
  mosquitto_loop_start(echo);
  mosquitto_connect(echo, "127.0.0.1", port, 10);
  constexpr int kMessages = 2000;
  constexpr double kHz = 200;
  double echo_p99;
  {
    Timer t(port, "bench/echo-out", "ts");
    echo_p99 = RoundTripP99(t, "bench/echo-in", 1, kMessages, kHz, sensor_payload);
  }
  mosquitto_disconnect(echo);
  mosquitto_loop_stop(echo, false);
  mosquitto_destroy(echo);

  // The device: the real control stack (schema, buffer, preprocessing, inference, rules, MQTT).
  ControlConfig c;
  c.model_dataset = "uci-har";
  c.outputs = {"walking", "upstairs", "downstairs", "sitting", "standing", "laying"};
  c.schema.fields = {{"features", -1, 1, true, 561}};
  c.schema.timestamp_field = "ts";
  c.schema.max_payload_bytes = 16384;
  c.deadline_ms = 20;
  // Fires on one window and releases on the next: a command every other window.
  RuleSpec r;
  r.name = "toggle";
  r.uses_model = true;
  r.when = {{7, Condition::kGe, 0}};  // confidence >= 0
  r.release_when = r.when;
  r.publish = {"bench/cmd", "{}"};
  c.rules.rules.push_back(r);
  MqttOptions mo;
  mo.port = port;
  mo.client_id = "bench-device";
  mo.topics = {"bench/sensor"};
  c.mqtt = mo;
  BufferOptions bo;
  bo.path = dir + "/samples.db";
  c.buffer = bo;
  c.status_interval_s = 3600;
  StatusOr<std::unique_ptr<ControlStack>> started = ControlStack::Start(c, "bench-device");
  if (!started.ok()) {
    std::fprintf(stderr, "inference_bench: %s\n", started.status().message().c_str());
    return 1;
  }
  std::unique_ptr<ControlStack> stack = std::move(started).value();
  if (!stack->loop().SwapModel(model).ok()) return 1;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  double e2e_p99, e2e_p99_training;
  {
    Timer t(port, "bench/cmd", "ts_ms");
    e2e_p99 = RoundTripP99(t, "bench/sensor", 1, kMessages, kHz, sensor_payload);
  }
  {
    BackgroundTraining training(spec, *data);
    Timer t(port, "bench/cmd", "ts_ms");
    // Later timestamps than the idle run, so the rule's state carries on unchanged.
    e2e_p99_training =
        RoundTripP99(t, "bench/sensor", 1000000, kMessages, kHz, sensor_payload);
  }
  const double missed = static_cast<double>(stack->loop().missed_deadlines());
  const double windows = static_cast<double>(stack->loop().windows());
  stack.reset();
  kill(broker, SIGTERM);
  waitpid(broker, nullptr, 0);

  nlohmann::json out;
  out["model"] = "har-mlp 561-128-6";
  out["p50_us"] = p50;
  out["p99_us"] = p99;
  out["p50_training_us"] = p50_training;
  out["p99_training_us"] = p99_training;
  out["p99_training_over_idle"] = p99_training / p99;
  out["training_epochs_during_measurement"] = epochs;
  out["sequence_model"] = "cnn1d 128x9 conv32-conv32 k5 -> 6";
  out["sequence_p50_us"] = cnn_p50;
  out["sequence_p99_us"] = cnn_p99;
  out["sequence_p99_training_us"] = cnn_p99_training;
  out["sequence_p99_training_over_idle"] = cnn_p99_training / cnn_p99;
  out["floor_aten_p50_us"] = floor_p50;
  out["p50_over_floor"] = p50 / floor_p50;
  out["int8_p50_us"] = i8_p50;
  out["int8_p99_us"] = i8_p99;
  out["int8_heldout"] = "trained on subject 1 (10 epochs), measured on subject 3";
  out["int8_heldout_rows"] = test_rows.rows;
  out["fp32_heldout_accuracy"] = f32_right / n_test;
  out["int8_heldout_accuracy"] = i8_right / n_test;
  out["int8_argmax_agreement"] = agree / n_test;
  out["int8_weight_bytes"] = layout.total;  // one byte per weight (biases stay float)
  out["fp32_weight_bytes"] = layout.total * 4;
  out["mqtt_messages_per_run"] = kMessages;
  out["mqtt_rate_hz"] = kHz;
  out["e2e_p99_ms"] = e2e_p99;
  out["e2e_p99_training_ms"] = e2e_p99_training;
  out["floor_broker_echo_p99_ms"] = echo_p99;
  out["e2e_p99_over_echo"] = e2e_p99 / echo_p99;
  out["control_windows"] = windows;
  out["control_missed_deadlines_20ms"] = missed;
  out["peak_rss_mb"] = PeakRssMb();
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
