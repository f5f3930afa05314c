#include "client/control/mqtt_link.h"

#include <mosquitto.h>

#include <chrono>

#include "common/log.h"

namespace fleet::control {

StatusOr<MqttOptions> ParseMqttOptions(ConfigMap m, const std::string& device_id) {
  MqttOptions o;
  std::string broker;
  RETURN_IF_ERROR(m.Require("broker", &broker));
  size_t colon = broker.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return InvalidArgument(m.Where("broker") + " is '" + broker + "' (expected host:port)");
  }
  o.host = broker.substr(0, colon);
  char* end = nullptr;
  long port = std::strtol(broker.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || port <= 0 || port > 65535) {
    return InvalidArgument(m.Where("broker") + ": port in '" + broker + "' is not in 1..65535");
  }
  o.port = static_cast<int>(port);
  o.client_id = device_id;
  RETURN_IF_ERROR(m.Get("client_id", &o.client_id));
  if (o.client_id.empty() || o.client_id.size() > 128) {
    return InvalidArgument(m.Where("client_id") + " must be 1..128 characters");
  }
  RETURN_IF_ERROR(m.Require("topics", &o.topics));
  if (o.topics.empty()) return InvalidArgument(m.Where("topics") + " must list a topic");
  for (const std::string& t : o.topics) {
    if (mosquitto_sub_topic_check(t.c_str()) != MOSQ_ERR_SUCCESS) {
      return InvalidArgument(m.Where("topics") + ": '" + t + "' is not a valid topic filter");
    }
  }
  uint32_t keepalive = static_cast<uint32_t>(o.keepalive_s);
  RETURN_IF_ERROR(m.Get("keepalive_s", &keepalive));
  if (keepalive < 5 || keepalive > 3600) {
    return InvalidArgument(m.Where("keepalive_s") + " must be in [5, 3600]");
  }
  o.keepalive_s = static_cast<int>(keepalive);
  RETURN_IF_ERROR(m.Get("reconnect_max_s", &o.reconnect_max_s));
  if (o.reconnect_max_s == 0) return InvalidArgument(m.Where("reconnect_max_s") + " must be >= 1");
  RETURN_IF_ERROR(m.Get("username", &o.username));
  RETURN_IF_ERROR(m.Get("password", &o.password));
  ASSIGN_OR_RETURN(ConfigMap tls, m.Child("tls"));
  RETURN_IF_ERROR(tls.Get("ca_cert", &o.tls_ca));
  RETURN_IF_ERROR(tls.Get("cert", &o.tls_cert));
  RETURN_IF_ERROR(tls.Get("key", &o.tls_key));
  RETURN_IF_ERROR(tls.Finish());
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    return InvalidArgument(m.Where("tls") + ": give cert and key together");
  }
  if (!o.tls_cert.empty() && o.tls_ca.empty()) {
    return InvalidArgument(m.Where("tls") + ": a client certificate needs ca_cert");
  }
  RETURN_IF_ERROR(m.Finish());
  return o;
}

namespace {
std::once_flag lib_once;
}

StatusOr<std::unique_ptr<MqttLink>> MqttLink::Start(MqttOptions options, MessageFn on_message) {
  std::call_once(lib_once, [] { mosquitto_lib_init(); });
  std::unique_ptr<MqttLink> link(new MqttLink(std::move(options), std::move(on_message)));
  const MqttOptions& o = link->options_;
  link->mosq_ = mosquitto_new(o.client_id.c_str(), /*clean_session=*/false, link.get());
  if (link->mosq_ == nullptr) return Internal("mqtt: cannot create a client (out of memory?)");
  mosquitto* m = link->mosq_;
  mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
  mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
  mosquitto_connect_callback_set(m, &MqttLink::OnConnect);
  mosquitto_disconnect_callback_set(m, &MqttLink::OnDisconnect);
  mosquitto_message_callback_set(m, &MqttLink::OnMessage);
  mosquitto_log_callback_set(m, &MqttLink::OnLog);
  mosquitto_reconnect_delay_set(m, 1, o.reconnect_max_s, /*exponential=*/true);
  if (!o.username.empty() &&
      mosquitto_username_pw_set(m, o.username.c_str(), o.password.c_str()) != MOSQ_ERR_SUCCESS) {
    return InvalidArgument("mqtt: bad username or password");
  }
  if (!o.tls_ca.empty()) {
    int rc = mosquitto_tls_set(m, o.tls_ca.c_str(), nullptr,
                               o.tls_cert.empty() ? nullptr : o.tls_cert.c_str(),
                               o.tls_key.empty() ? nullptr : o.tls_key.c_str(), nullptr);
    if (rc != MOSQ_ERR_SUCCESS) {
      return InvalidArgument(std::string("mqtt tls: ") + mosquitto_strerror(rc) +
                             " (check ca_cert, cert and key paths)");
    }
    mosquitto_tls_opts_set(m, /*SSL_VERIFY_PEER=*/1, "tlsv1.2", nullptr);
  }
  int rc = mosquitto_loop_start(m);
  if (rc != MOSQ_ERR_SUCCESS) {
    return Internal(std::string("mqtt: cannot start network thread: ") + mosquitto_strerror(rc));
  }
  // A broker that is down now is not an error: the network thread keeps retrying.
  rc = mosquitto_connect_async(m, o.host.c_str(), o.port, o.keepalive_s);
  if (rc != MOSQ_ERR_SUCCESS) {
    FLEET_LOG(Warn) << "mqtt: broker " << o.host << ":" << o.port
                    << " not reachable yet (" << mosquitto_strerror(rc) << "); retrying";
  }
  return link;
}

MqttLink::MqttLink(MqttOptions options, MessageFn on_message)
    : options_(std::move(options)), on_message_(std::move(on_message)) {}

MqttLink::~MqttLink() {
  if (mosq_ == nullptr) return;
  mosquitto_disconnect(mosq_);
  mosquitto_loop_stop(mosq_, /*force=*/false);
  mosquitto_destroy(mosq_);
}

void MqttLink::OnConnect(mosquitto* m, void* self, int rc) {
  auto* link = static_cast<MqttLink*>(self);
  if (rc != 0) {
    FLEET_LOG(Warn) << "mqtt: broker refused the connection: " << mosquitto_connack_string(rc);
    return;
  }
  for (const std::string& t : link->options_.topics) {
    int s = mosquitto_subscribe(m, nullptr, t.c_str(), 1);
    if (s != MOSQ_ERR_SUCCESS) {
      FLEET_LOG(Warn) << "mqtt: subscribe to '" << t << "' failed: " << mosquitto_strerror(s);
    }
  }
  link->connected_ = true;
  uint64_t n = ++link->connects_;
  FLEET_LOG(Info) << "mqtt: connected to " << link->options_.host << ":" << link->options_.port
                  << (n > 1 ? " (reconnect " + std::to_string(n - 1) + ")" : std::string());
  link->FlushOutbox();
}

void MqttLink::OnDisconnect(mosquitto*, void* self, int rc) {
  auto* link = static_cast<MqttLink*>(self);
  link->connected_ = false;
  if (rc != 0) FLEET_LOG(Warn) << "mqtt: connection lost (" << mosquitto_strerror(rc) << "); reconnecting";
}

// libmosquitto's own errors (e.g. "certificate verify failed") would otherwise be invisible
// while it retries; one line per 10 s at most.
void MqttLink::OnLog(mosquitto*, void* self, int level, const char* text) {
  if ((level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING)) == 0) return;
  auto* link = static_cast<MqttLink*>(self);
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  if (now - link->last_error_log_s_.load() < 10) return;
  link->last_error_log_s_ = now;
  FLEET_LOG(Warn) << "mqtt: " << text;
}

void MqttLink::OnMessage(mosquitto*, void* self, const mosquitto_message* msg) {
  auto* link = static_cast<MqttLink*>(self);
  link->on_message_(msg->topic,
                    std::string_view(static_cast<const char*>(msg->payload),
                                     static_cast<size_t>(msg->payloadlen)));
}

void MqttLink::Publish(const std::string& topic, const std::string& payload) {
  if (connected_) {
    int rc = mosquitto_publish(mosq_, nullptr, topic.c_str(), static_cast<int>(payload.size()),
                               payload.data(), 1, false);
    if (rc == MOSQ_ERR_SUCCESS) return;
    if (rc != MOSQ_ERR_NO_CONN) {
      FLEET_LOG(Warn) << "mqtt: publish to '" << topic << "' failed: " << mosquitto_strerror(rc);
      return;
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (outbox_.size() >= options_.outbox_max) {
    outbox_.pop_front();
    ++outbox_drops_;
  }
  outbox_.emplace_back(topic, payload);
}

void MqttLink::FlushOutbox() {
  std::deque<std::pair<std::string, std::string>> pending;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending.swap(outbox_);
  }
  for (auto& [topic, payload] : pending) Publish(topic, payload);
}

}  // namespace fleet::control
