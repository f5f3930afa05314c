// The device's real-time loop: validated readings -> on-device buffer -> preprocessing ->
// batch-1 inference -> rules -> commands. It runs on its own thread, which nothing else blocks:
// sources hand readings over through a bounded queue (oldest dropped and counted when full),
// models are swapped in as whole objects between two inferences, the buffer commits on its own
// thread, and training (another thread, lower priority) is paused whenever a reading misses
// its deadline.
//
// Latency is measured per stage from the moment a message was received: queue wait,
// preprocessing, inference, rules+publish, and the total, which is checked against
// deadline_ms. A summary goes to the log and, if configured, to `status_topic` every
// status_interval_s.
//
// Thread-safe: OnMessage/SwapModel/Status may be called from any thread.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "client/control/control_config.h"
#include "client/control/inference_model.h"
#include "client/control/preprocess.h"
#include "client/control/rules.h"
#include "client/control/sample_buffer.h"
#include "client/control/training_gate.h"
#include "common/latency_histogram.h"

namespace fleet::control {

class ControlLoop {
 public:
  using PublishFn = std::function<void(const std::string& topic, const std::string& payload)>;

  // `buffer` may be null (no on-device buffer) and must outlive the loop.
  ControlLoop(ControlConfig config, std::string device_id, PublishFn publish,
              SampleBuffer* buffer);
  ~ControlLoop();  // Stop()

  void Start();
  void Stop();

  // A raw message from a source (MQTT network thread, replay thread). Never blocks.
  void OnMessage(std::string_view topic, std::string_view payload);
  // Installs `model` for the next window. Refused (and logged) when its input or output size
  // does not match preprocessing and `outputs`; the current model then stays.
  Status SwapModel(std::shared_ptr<InferenceModel> model);

  TrainingGate& gate() { return gate_; }
  const ControlConfig& config() const { return config_; }

  // Counters and latency percentiles as one JSON object (also what status_topic carries).
  std::string StatusJson() const;
  uint64_t windows() const { return windows_.load(); }
  // Readings fully handled: preprocessed and, when a window completed, inferred on and acted on.
  uint64_t readings() const { return readings_.load(); }
  uint64_t dropped(DropReason r) const { return drops_[static_cast<size_t>(r)].load(); }
  uint64_t missed_deadlines() const { return missed_.load(); }
  uint64_t inferences() const { return inferences_.load(); }

  enum Stage { kQueue, kPreprocess, kInference, kRules, kTotal, kStages };
  const LatencyHistogram& latency(Stage s) const { return hist_[s]; }

 private:
  void Loop();
  void Process(Reading& r);
  void Drop(std::string_view topic, const Rejection& why);
  void Summarize();

  const ControlConfig config_;
  const std::string device_id_;
  const PublishFn publish_;
  SampleBuffer* const buffer_;
  TrainingGate gate_;

  // Owned by the control thread.
  Preprocessor pre_;
  RuleEngine rules_;
  std::vector<float> row_, signals_, raw_;
  std::vector<Command> commands_;
  uint64_t last_summary_seen_ = 0;  // readings + drops at the last log summary

  std::mutex model_mu_;  // guards model_ (held only to copy the pointer)
  std::shared_ptr<InferenceModel> model_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Reading> queue_;  // guarded by mu_
  bool stop_ = true;           // guarded by mu_
  struct TopicRate {
    double tokens = 0;
    int64_t last_ns = 0;
  };
  std::map<std::string, TopicRate, std::less<>> rates_;  // guarded by mu_
  struct DropLog {
    int64_t last_ns = 0;
    uint64_t suppressed = 0;
  };
  std::array<DropLog, static_cast<size_t>(DropReason::kCount)> drop_log_{};  // guarded by mu_
  std::thread thread_;

  std::atomic<uint64_t> readings_{0}, windows_{0}, inferences_{0}, commands_sent_{0},
      missed_{0}, model_swaps_{0};
  std::array<std::atomic<uint64_t>, static_cast<size_t>(DropReason::kCount)> drops_{};
  std::array<LatencyHistogram, kStages> hist_;
  std::atomic<bool> has_model_{false};
  mutable std::mutex version_mu_;
  std::string version_;  // guarded by version_mu_
};

}  // namespace fleet::control
