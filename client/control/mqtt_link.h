// One MQTT connection (libmosquitto, threaded loop): subscribes to the sensor topics at QoS 1 on
// every (re)connect and publishes commands at QoS 1. The session is persistent
// (clean_session=false with a stable client id), so the broker queues QoS 1 sensor messages
// while the device is briefly away; reconnects back off exponentially up to reconnect_max_s.
// Commands published while disconnected wait in a bounded outbox and go out on reconnect.
//
// Why libmosquitto rather than paho-mqtt C++: it is the same project as the broker the tests
// run, a small C API with a built-in reconnecting network thread and TLS, and Debian ships the
// current 2.0 line (libpaho-mqttpp 1.2 wraps the older paho C 1.3 and adds a C++ exception
// surface we would have to fence off anyway).
//
// Thread-safe. on_message runs on the library's network thread and must not block.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.h"
#include "common/status.h"

struct mosquitto;
struct mosquitto_message;

namespace fleet::control {

struct MqttOptions {
  std::string host = "127.0.0.1";
  int port = 1883;
  std::string client_id;           // default: the device id
  std::vector<std::string> topics; // sensor topics (wildcards allowed)
  int keepalive_s = 10;
  uint32_t reconnect_max_s = 30;
  size_t outbox_max = 1024;        // commands kept while disconnected
  // TLS to the broker (optional): CA to verify it, and a client certificate if it asks for one.
  std::string tls_ca, tls_cert, tls_key;
  std::string username, password;
};

// Reads `mqtt:` ("broker: host:port", topics, keepalive, tls, ...); client_id defaults to
// `device_id`.
StatusOr<MqttOptions> ParseMqttOptions(ConfigMap m, const std::string& device_id);

class MqttLink {
 public:
  using MessageFn = std::function<void(std::string_view topic, std::string_view payload)>;

  static StatusOr<std::unique_ptr<MqttLink>> Start(MqttOptions options, MessageFn on_message);
  ~MqttLink();  // disconnects and joins the network thread

  // Queues a QoS 1 publish; while disconnected the outbox keeps it (oldest dropped when full).
  void Publish(const std::string& topic, const std::string& payload);

  bool connected() const { return connected_.load(); }
  uint64_t connects() const { return connects_.load(); }
  uint64_t outbox_drops() const { return outbox_drops_.load(); }

 private:
  MqttLink(MqttOptions options, MessageFn on_message);
  static void OnConnect(mosquitto* m, void* self, int rc);
  static void OnDisconnect(mosquitto* m, void* self, int rc);
  static void OnMessage(mosquitto* m, void* self, const mosquitto_message* msg);
  static void OnLog(mosquitto* m, void* self, int level, const char* text);
  void FlushOutbox();

  const MqttOptions options_;
  const MessageFn on_message_;
  mosquitto* mosq_ = nullptr;
  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> connects_{0};
  std::atomic<uint64_t> outbox_drops_{0};
  std::atomic<int64_t> last_error_log_s_{-100};
  std::mutex mu_;
  std::deque<std::pair<std::string, std::string>> outbox_;  // guarded by mu_
};

}  // namespace fleet::control
