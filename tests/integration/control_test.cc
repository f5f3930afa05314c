// The device's inference and control loop end to end, with real processes: a mosquitto broker on
// a free loopback port, a coordinator, and fleet-clients that train a HAR model federatedly and
// run its global model on feature vectors published over MQTT.
#include <gtest/gtest.h>
#include <mosquitto.h>
#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include <pwd.h>

#include <fstream>

#include "tests/integration/harness.h"

namespace fleet::testing {
namespace {

// A mosquitto broker the test owns (no persistence: a restart forgets every session).
class Broker {
 public:
  explicit Broker(std::string dir) : dir_(std::move(dir)), port_(FreePort()) {}
  bool Start() {
    std::ofstream(dir_ + "/mosquitto.conf") << "listener " << port_ << " 127.0.0.1\n"
                                             << "allow_anonymous true\npersistence false\n"
                                             << "max_inflight_messages 1000\n";
    proc_ = std::make_unique<Process>();
    if (!proc_->Start({"/usr/sbin/mosquitto", "-c", dir_ + "/mosquitto.conf"},
                      dir_ + "/mosquitto.log")) {
      return false;
    }
    return WaitFor([&] { return log().find("mosquitto version") != std::string::npos &&
                                log().find("Opening ipv4 listen socket") != std::string::npos; },
                   std::chrono::seconds(10));
  }
  void Kill() { proc_.reset(); }
  int port() const { return port_; }
  std::string log() const { return ReadAll(dir_ + "/mosquitto.log"); }

 private:
  std::string dir_;
  int port_;
  std::unique_ptr<Process> proc_;
};

// The test's own MQTT client: publishes sensor messages, records every message on `filter`.
class Probe {
 public:
  Probe(int port, const std::string& filter) : filter_(filter) {
    mosquitto_lib_init();
    m_ = mosquitto_new(nullptr, true, this);
    mosquitto_connect_callback_set(m_, [](mosquitto* m, void* self, int rc) {
      if (rc == 0) mosquitto_subscribe(m, nullptr, static_cast<Probe*>(self)->filter_.c_str(), 1);
    });
    mosquitto_message_callback_set(m_, [](mosquitto*, void* self, const mosquitto_message* msg) {
      auto* p = static_cast<Probe*>(self);
      std::lock_guard<std::mutex> lock(p->mu_);
      p->got_.emplace_back(msg->topic, std::string(static_cast<const char*>(msg->payload),
                                                   static_cast<size_t>(msg->payloadlen)));
    });
    mosquitto_reconnect_delay_set(m_, 1, 1, false);
    mosquitto_loop_start(m_);
    mosquitto_connect_async(m_, "127.0.0.1", port, 10);
  }
  ~Probe() {
    mosquitto_disconnect(m_);
    mosquitto_loop_stop(m_, false);
    mosquitto_destroy(m_);
  }
  void Publish(const std::string& topic, const std::string& payload) {
    mosquitto_publish(m_, nullptr, topic.c_str(), static_cast<int>(payload.size()), payload.data(),
                      1, false);
  }
  // Messages received on `topic` so far.
  std::vector<std::string> On(const std::string& topic) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    for (const auto& [t, p] : got_) {
      if (t == topic) out.push_back(p);
    }
    return out;
  }
  // The newest message on `topic` that parses and satisfies `pred`, waiting up to `timeout`.
  template <typename Pred>
  nlohmann::json WaitJson(const std::string& topic, Pred pred, std::chrono::seconds timeout) {
    nlohmann::json found;
    WaitFor(
        [&] {
          for (const std::string& p : On(topic)) {
            nlohmann::json j = nlohmann::json::parse(p, nullptr, false);
            if (!j.is_discarded() && pred(j)) found = j;
          }
          return !found.is_null();
        },
        timeout);
    return found;
  }

 private:
  std::string filter_;
  mosquitto* m_;
  std::mutex mu_;
  std::vector<std::pair<std::string, std::string>> got_;
};

// Rows of a prepared HAR subject file with activity `label` (1 walking ... 6 laying).
std::vector<std::vector<float>> HarRows(int subject, int label, size_t n) {
  std::ifstream in(std::string(FLEET_HAR_DIR) + "/subject-" + std::to_string(subject) + ".txt");
  std::vector<std::vector<float>> rows;
  std::string line;
  while (rows.size() < n && std::getline(in, line)) {
    std::istringstream ss(line);
    float subj, lab;
    ss >> subj >> lab;
    if (static_cast<int>(lab) != label) continue;
    std::vector<float> f;
    float v;
    while (ss >> v) f.push_back(v);
    rows.push_back(std::move(f));
  }
  return rows;
}

std::string Features(const std::vector<float>& f, int64_t ts) {
  nlohmann::json j;
  j["ts"] = ts;
  j["features"] = f;
  return j.dump();
}

std::string ControlYaml(int broker_port) {
  return R"(control:
  model_dataset: uci-har
  outputs: [walking, upstairs, downstairs, sitting, standing, laying]
  mqtt: {broker: "127.0.0.1:)" + std::to_string(broker_port) + R"(", topics: [care/r1/imu], keepalive_s: 5, reconnect_max_s: 1}
  schema:
    timestamp: ts
    fields: [{name: features, size: 561, min: -1, max: 1}]
    max_payload_bytes: 16384
  deadline_ms: 200
  default_action: {topic: care/r1/alert, command: {status: model_unavailable}}
  rules:
    - name: possible_fall
      when: laying > 0.6
      for_windows: 3
      release_when: laying < 0.3
      min_interval: 2m
      publish: {topic: care/r1/alert, command: {alert: possible_fall}}
      on_release: {topic: care/r1/alert, command: {alert: cleared}}
  status_topic: care/r1/status
  status_interval_s: 1
  buffer: {commit_interval_ms: 20}
)";
}

size_t CountEvent(const std::vector<std::string>& msgs, const std::string& key,
                  const std::string& value) {
  size_t n = 0;
  for (const std::string& p : msgs) {
    nlohmann::json j = nlohmann::json::parse(p, nullptr, false);
    if (!j.is_discarded() && j.contains(key) && j[key] == value) ++n;
  }
  return n;
}

TEST(Control, FederatedModelDrivesAlertsOverMqttThroughBadInputAndABrokerRestart) {
  Cluster c;
  Broker broker(c.dir());
  ASSERT_TRUE(broker.Start()) << broker.log();
  Probe probe(broker.port(), "care/#");
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  c.set_client_config_extra(1, ControlYaml(broker.port()));
  Process& device = c.StartHarClient(1);
  c.StartHarClient(3);

  // No model yet: the safe default action goes out.
  nlohmann::json safe = probe.WaitJson(
      "care/r1/alert", [](const nlohmann::json& j) { return j.value("event", "") == "no_model"; },
      std::chrono::seconds(30));
  ASSERT_FALSE(safe.is_null()) << device.Log();
  EXPECT_EQ(safe["status"], "model_unavailable");
  EXPECT_EQ(safe["device"], "har-subject-1");

  ASSERT_TRUE(WaitFor([&] { return c.OnlineDevices() >= 2; }, std::chrono::seconds(30)));
  std::string job = c.WriteJob("it-control", 5, 2, 2, "secure_aggregation: {enabled: false}\n");
  auto submit = c.Fleetctl({"job", "submit", "-f", job});
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  const std::string id = submit.output.substr(0, submit.output.find('\n'));
  auto watch = c.Fleetctl({"job", "watch", id});
  ASSERT_EQ(watch.exit_code, 0) << watch.output;
  ASSERT_TRUE(WaitFor([&] { return device.Log().find("control: now running model " + id +
                                                     "/round-5") != std::string::npos; },
                      std::chrono::seconds(10)))
      << device.Log();

  // Lying still for 3 windows -> one alert naming the model; walking -> cleared.
  const auto laying = HarRows(1, 6, 12), walking = HarRows(1, 1, 4);
  ASSERT_EQ(laying.size(), 12u);
  int64_t ts = 1'700'000'000'000;
  int valid = 0;
  for (int i = 0; i < 4; ++i, ++valid) probe.Publish("care/r1/imu", Features(laying[i], ts += 2560));
  nlohmann::json alert = probe.WaitJson(
      "care/r1/alert", [](const nlohmann::json& j) { return j.value("alert", "") == "possible_fall"; },
      std::chrono::seconds(20));
  ASSERT_FALSE(alert.is_null()) << device.Log();
  EXPECT_EQ(alert["model_version"], id + "/round-5");
  EXPECT_EQ(alert["event"], "fire");
  for (int i = 0; i < 2; ++i, ++valid) probe.Publish("care/r1/imu", Features(walking[i], ts += 2560));
  ASSERT_FALSE(probe.WaitJson("care/r1/alert",
                              [](const nlohmann::json& j) { return j.value("alert", "") == "cleared"; },
                              std::chrono::seconds(20))
                   .is_null())
      << device.Log();
  EXPECT_EQ(CountEvent(probe.On("care/r1/alert"), "alert", "possible_fall"), 1u)
      << "hysteresis: one alert per episode";

  // Every class of bad input is counted and dropped; the loop carries on.
  std::vector<float> out_of_range = laying[0];
  out_of_range[7] = 3.5f;
  std::vector<float> short_vec(laying[0].begin(), laying[0].begin() + 560);
  nlohmann::json extra = nlohmann::json::parse(Features(laying[0], 5));
  extra["extra"] = 1;
  const std::string bad[] = {
      "not json at all",
      R"({"ts": 1})",
      extra.dump(),
      R"({"ts": "yesterday", "features": 1})",
      Features(short_vec, 5),
      Features(out_of_range, 5),
      R"({"ts": 1, "features": [NaN]})",
      std::string(20000, '{'),
  };
  for (const std::string& b : bad) probe.Publish("care/r1/imu", b);
  nlohmann::json status = probe.WaitJson(
      "care/r1/status",
      [](const nlohmann::json& j) {
        const auto& d = j["dropped"];
        return d["not_json"] >= 2 && d["missing_field"] >= 1 && d["extra_field"] >= 1 &&
               d["wrong_type"] >= 2 && d["out_of_range"] >= 1 && d["oversized"] >= 1;
      },
      std::chrono::seconds(20));
  ASSERT_FALSE(status.is_null()) << device.Log();
  const std::string log = device.Log();
  EXPECT_NE(log.find("dropped a message on 'care/r1/imu': extra_field: field 'extra' is not in "
                     "the schema"), std::string::npos) << log;
  EXPECT_NE(log.find("out_of_range: field 'features[7]' is outside its range"), std::string::npos)
      << log;

  // The broker dies and comes back on the same port: the device reconnects and resubscribes.
  broker.Kill();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_TRUE(broker.Start()) << broker.log();
  ASSERT_TRUE(WaitFor([&] { return device.Log().find("(reconnect 1)") != std::string::npos; },
                      std::chrono::seconds(30)))
      << device.Log();
  ts += 10 * 60 * 1000;  // past the rule's 2-minute min_interval
  // The probe reconnects too; publish until the device has seen the new readings.
  for (int i = 4; i < 12; ++i, ++valid) {
    probe.Publish("care/r1/imu", Features(laying[i], ts += 2560));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(WaitFor([&] { return CountEvent(probe.On("care/r1/alert"), "alert", "possible_fall") >= 2; },
                      std::chrono::seconds(30)))
      << device.Log();

  // Every valid reading was acknowledged by the buffer; kill -9 loses none of them.
  nlohmann::json settled = probe.WaitJson(
      "care/r1/status",
      [&](const nlohmann::json& j) { return j["buffer"]["committed"] == valid; },
      std::chrono::seconds(20));
  ASSERT_FALSE(settled.is_null()) << "status never showed " << valid << " committed readings";
  EXPECT_EQ(settled["readings"], valid);
  EXPECT_EQ(settled["missed_deadlines"], 0) << settled.dump();
  EXPECT_GT(settled["latency"]["inference"]["p99_us"].get<int>(), 0);
  device.Kill(SIGKILL);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((c.dir() + "/device-1/samples.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM samples;", -1, &st, nullptr);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(st, 0), valid);
  sqlite3_finalize(st);
  sqlite3_close(db);

  // Restarted, the device runs the kept model again (re-verified) without waiting for a job.
  Process& again = c.StartHarClient(1);
  ASSERT_TRUE(WaitFor([&] { return again.Log().find("control: restored the model of job " + id +
                                                    " round 5") != std::string::npos; },
                      std::chrono::seconds(30)))
      << again.Log();
  EXPECT_NE(again.Log().find("control: now running model " + id + "/round-5"), std::string::npos);
}

}  // namespace
}  // namespace fleet::testing

namespace fleet::testing {
namespace {

// Live readings -> buffer -> the same preprocessing -> a federated 1D-CNN sequence model, which
// the devices then run on the live stream.
TEST(Control, SequenceModelTrainsFederatedOnBufferedReplayWindows) {
  Cluster c;
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  const std::string data = std::string(FLEET_SOURCE_DIR) + "/../shared/data/uci-occupancy-detection/";
  const char* files[] = {"datatraining.txt", "datatest.txt"};
  const int rows[] = {8143, 2665};
  for (int s : {1, 3}) {
    const int i = s == 1 ? 0 : 1;
    c.set_client_config_extra(s, std::string(R"(control:
  model_dataset: room-live
  train_dataset: room-live
  outputs: [vacant, occupied]
  replay: {path: )") + data + files[i] + R"(, rate_hz: 5000, topic: room/sensors}
  max_rate_hz: 100000
  schema:
    fields: [{name: Light, min: 0, max: 5000}, {name: CO2, min: 0, max: 10000}]
    label: Occupancy
  preprocess: {window: 8, stride: 4, normalize: {mean: [119.5, 606.5], std: [194.7, 314.3]}}
  default_action: {topic: room/hvac, command: {setpoint: comfort}}
  rules:
    - {name: occupied, when: occupied > 0.8, release_when: occupied < 0.2,
       publish: {topic: room/hvac, command: {setpoint: comfort}},
       on_release: {topic: room/hvac, command: {setpoint: eco}}}
  status_interval_s: 1
  buffer: {commit_interval_ms: 20}
)");
  }
  Process& a = c.StartHarClient(1);
  Process& b = c.StartHarClient(3);
  ASSERT_TRUE(WaitFor([&] { return a.Log().find(std::to_string(rows[0]) + " readings") != std::string::npos &&
                                   b.Log().find(std::to_string(rows[1]) + " readings") != std::string::npos; },
                      std::chrono::seconds(60)))
      << a.Log() << b.Log();
  const std::string job = c.dir() + "/seq.yaml";
  std::ofstream(job) << R"(name: it-seq
dataset: room-live
model: {type: cnn1d, task: classification, input_dim: 16, channels: 2, kernel_size: 3, hidden: [8],
        output_dim: 2}
train: {optimizer: adam, learning_rate: 0.01, local_epochs: 2, batch_size: 32}
rounds: 3
min_clients: 2
target_clients: 2
round_deadline_s: 60
secure_aggregation: {enabled: false}
)";
  auto submit = c.Fleetctl({"job", "submit", "-f", job});
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  const std::string id = submit.output.substr(0, submit.output.find('\n'));
  auto watch = c.Fleetctl({"job", "watch", id});
  ASSERT_EQ(watch.exit_code, 0) << watch.output << a.Log();
  auto get = c.Fleetctl({"-o", "json", "job", "get", id});
  EXPECT_EQ(JsonInts(get.output, "participants"), (std::vector<int>{2, 2, 2})) << get.output;
  // Windows of 8 readings every 4: (rows - 8) / 4 + 1 per device, 80% for training.
  const std::string alog = a.Log();
  EXPECT_NE(alog.find("dataset room-live (sample buffer): 1628 train, 406 validation windows, "
                      "16 features"), std::string::npos) << alog;
  EXPECT_NE(alog.find("control: now running model " + id + "/round-3"), std::string::npos) << alog;
  // The model learned occupancy from the windows: its last local validation accuracy.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(alog, m, std::regex("round 3: trained on [0-9]+ examples, loss "
                                                    "[0-9.e-]+, val_acc ([0-9.]+)")))
      << alog;
  EXPECT_GT(std::stod(m[1]), 0.9) << alog;
}

}  // namespace
}  // namespace fleet::testing

namespace fleet::testing {
namespace {

// TLS to the broker: the device verifies the broker against its configured CA and presents a
// client certificate; a device given the wrong CA never connects and says why.
TEST(Control, MqttOverMutualTlsToTheBroker) {
  Cluster c;
  const std::string d = c.dir() + "/mqtt-tls";
  ASSERT_EQ(std::system(("mkdir -p " + d).c_str()), 0);
  std::ofstream(d + "/san.ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
  const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes ";
  const std::string script =
      "cd " + d + " && set -e && exec 2>openssl.log && "
      "openssl req -x509 " + ec + "-keyout ca.key -out ca.pem -days 1 -subj /CN=mqtt-ca && "
      "openssl req -x509 " + ec + "-keyout other-ca.key -out other-ca.pem -days 1 -subj /CN=other && "
      "openssl req " + ec + "-keyout server.key -out server.csr -subj /CN=localhost && "
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem "
      "-days 1 -extfile san.ext && "
      "openssl req " + ec + "-keyout client.key -out client.csr -subj /CN=room-1 && "
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem "
      "-days 1";
  ASSERT_EQ(std::system(script.c_str()), 0) << ReadAll(d + "/openssl.log");
  const int plain = FreePort(), tls = FreePort();
  // Run as ourselves: mosquitto started as root otherwise drops to a user who cannot read the
  // test's private directory.
  std::ofstream(d + "/mosquitto.conf")
      << "user " << getpwuid(getuid())->pw_name << "\n"
      << "allow_anonymous true\npersistence false\n"
      << "listener " << plain << " 127.0.0.1\n"
      << "listener " << tls << " 127.0.0.1\n"
      << "cafile " << d << "/ca.pem\ncertfile " << d << "/server.pem\nkeyfile " << d
      << "/server.key\nrequire_certificate true\n";
  Process broker;
  ASSERT_TRUE(broker.Start({"/usr/sbin/mosquitto", "-c", d + "/mosquitto.conf"}, d + "/broker.log"));
  ASSERT_TRUE(WaitFor([&] { return ReadAll(d + "/broker.log").find(std::to_string(tls)) !=
                                   std::string::npos; },
                      std::chrono::seconds(10)))
      << ReadAll(d + "/broker.log");
  Probe probe(plain, "room/#");
  ASSERT_TRUE(c.StartCoordinator()) << c.coordinator().Log();
  auto control = [&](const std::string& ca, const std::string& topic) {
    return R"(control:
  model_dataset: uci-har
  outputs: [a, b, c, d, e, f]
  mqtt:
    broker: "localhost:)" + std::to_string(tls) + R"("
    topics: [room/1/sensors]
    reconnect_max_s: 1
    tls: {ca_cert: )" + d + "/" + ca + ", cert: " + d + "/client.pem, key: " + d + R"(/client.key}
  schema: {fields: [{name: x}]}
  default_action: {topic: )" + topic + R"(, command: {setpoint: comfort}}
  status_topic: room/1/status
  status_interval_s: 1
)";
  };
  c.set_client_config_extra(1, control("ca.pem", "room/1/hvac"));
  c.set_client_config_extra(3, control("other-ca.pem", "room/3/hvac"));
  Process& good = c.StartHarClient(1);
  Process& wrong = c.StartHarClient(3);
  nlohmann::json safe = probe.WaitJson(
      "room/1/hvac", [](const nlohmann::json& j) { return j.value("event", "") == "no_model"; },
      std::chrono::seconds(30));
  ASSERT_FALSE(safe.is_null()) << good.Log() << ReadAll(d + "/broker.log");
  probe.Publish("room/1/sensors", R"({"x": 1.5})");
  EXPECT_FALSE(probe.WaitJson("room/1/status",
                              [](const nlohmann::json& j) { return j["readings"] == 1; },
                              std::chrono::seconds(20))
                   .is_null())
      << good.Log();
  // The device with the wrong CA refuses the broker and keeps retrying.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_TRUE(probe.On("room/3/hvac").empty());
  EXPECT_EQ(wrong.Log().find("mqtt: connected"), std::string::npos) << wrong.Log();
  EXPECT_NE(wrong.Log().find("certificate verify failed"), std::string::npos) << wrong.Log();
  EXPECT_TRUE(wrong.Running());
}

}  // namespace
}  // namespace fleet::testing
