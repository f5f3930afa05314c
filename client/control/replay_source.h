// Replays a CSV file as sensor messages, for demos, tests and benchmarks: each row becomes the
// JSON object a sensor would publish (schema fields and label column; the schema's timestamp
// field, if any, is the replay time) and goes through the same validation as MQTT messages.
//
// Owns one thread; Stop() (or the destructor) ends it.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>

#include "client/control/control_config.h"
#include "common/status.h"

namespace fleet::control {

class ReplaySource {
 public:
  using MessageFn = std::function<void(std::string_view topic, std::string_view payload)>;
  // Loads and checks the whole file now (errors name file:line and column); rows are sent from
  // Start().
  static StatusOr<std::unique_ptr<ReplaySource>> Open(ReplayOptions options,
                                                      const SensorSchema& schema, MessageFn fn);
  ~ReplaySource();
  void Start();
  void Stop();
  uint64_t sent() const { return sent_.load(); }
  bool done() const { return done_.load(); }

 private:
  ReplaySource(ReplayOptions options, MessageFn fn) : options_(std::move(options)), fn_(std::move(fn)) {}
  void Run();

  const ReplayOptions options_;
  const MessageFn fn_;
  std::vector<nlohmann::json> rows_;  // one message per CSV row, built at Open
  std::string timestamp_field_;       // stamped with the replay time when sent
  std::atomic<bool> stop_{false}, done_{false};
  std::atomic<uint64_t> sent_{0};
  std::thread thread_;
};

}  // namespace fleet::control
