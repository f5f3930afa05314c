// Decisions over model outputs and raw signals, declared in the client config:
//
//   rules:
//     - name: fall_alert
//       when: fall > 0.9              # <signal> <op> <number> [and ...]; op: > >= < <= == !=
//       for_windows: 2                # consecutive windows the condition must hold (default 1)
//       for: 0s                       # and for this long in sample time (default 0)
//       release_when: fall < 0.5      # hysteresis: stays active until this holds
//       min_interval: 30s             # rate limit between this rule's commands
//       publish: {topic: care/room-3/alert, command: {action: alert}}
//       on_release: {topic: care/room-3/alert, command: {action: clear}}   # optional
//
// Signals are the model's named outputs (`outputs:`; probabilities for classifiers), `class`
// (argmax index), `confidence` (its probability), `anomaly` (1 when an autoencoder's
// reconstruction error exceeds its local threshold, else 0) and `raw.<field>` (newest reading, after
// missing-value filling, before normalization). Rules that read model signals do not run while no
// valid model is loaded; the engine emits `default_action` once instead, and again whenever the
// model becomes invalid. All times are sample timestamps, so behaviour is reproducible.
//
// Pure and not thread-safe: the control loop owns the engine.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"

namespace fleet::control {

// The signal table: names resolved to indices once, at config time.
class SignalNames {
 public:
  SignalNames(const std::vector<std::string>& outputs, const std::vector<std::string>& fields);
  std::optional<size_t> Find(const std::string& name) const;
  bool IsModelSignal(size_t index) const { return index < model_signals_; }
  size_t size() const { return names_.size(); }
  size_t num_outputs() const { return outputs_; }
  // Index of raw.<field 0>.
  size_t raw_base() const { return model_signals_; }

 private:
  std::vector<std::string> names_;
  size_t outputs_ = 0;
  size_t model_signals_ = 0;  // outputs + class + confidence + anomaly
};

struct Action {
  std::string topic;
  std::string command_json;  // the declared command object, serialized
};

struct Condition {
  size_t signal = 0;
  enum Op { kGt, kGe, kLt, kLe, kEq, kNe } op = kGt;
  double value = 0;
};

struct RuleSpec {
  std::string name;
  std::vector<Condition> when, release_when;  // all must hold; empty release: !when
  uint32_t for_windows = 1;
  int64_t for_ms = 0;
  int64_t min_interval_ms = 0;
  Action publish;
  std::optional<Action> on_release;
  bool uses_model = false;
};

struct RulesSpec {
  std::vector<RuleSpec> rules;
  std::optional<Action> default_action;
};

StatusOr<RulesSpec> ParseRules(ConfigMap& control, const SignalNames& names);

// A command ready to publish: JSON with the declared fields plus rule, event, device,
// model_version and ts_ms.
struct Command {
  std::string topic;
  std::string payload;
};

class RuleEngine {
 public:
  RuleEngine(RulesSpec spec, std::string device_id);

  // One completed window. `signals` follows SignalNames; model signals are ignored when
  // `model_version` is empty (no valid model). Appends commands to *out.
  void Evaluate(const std::vector<float>& signals, const std::string& model_version,
                int64_t ts_ms, std::vector<Command>* out);
  // The default action (if declared and not already sent): at start, before any window.
  void EmitDefault(int64_t ts_ms, std::vector<Command>* out);
  // Commands suppressed by min_interval so far.
  uint64_t rate_limited() const { return rate_limited_.load(); }
  bool active(size_t rule) const { return state_[rule].active; }

 private:
  struct State {
    bool active = false;
    uint32_t streak = 0;
    int64_t since_ms = 0;
    int64_t last_sent_ms = INT64_MIN;
  };
  Command Make(const Action& a, const std::string& rule, const char* event,
               const std::string& model_version, int64_t ts_ms) const;

  RulesSpec spec_;
  std::string device_id_;
  std::vector<State> state_;
  bool default_sent_ = false;
  std::atomic<uint64_t> rate_limited_{0};  // read by status reporting
};

}  // namespace fleet::control
