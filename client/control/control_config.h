// The `control:` block of a client config: where live sensor data comes from, how it becomes
// model input, which model runs on it, and which commands the results trigger. See README
// "Inference and control".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "client/control/mqtt_link.h"
#include "client/control/preprocess.h"
#include "client/control/rules.h"
#include "client/control/sample_buffer.h"
#include "client/control/sensor_schema.h"
#include "common/config.h"
#include "common/status.h"

namespace fleet::control {

// Replays a CSV file (header row; columns named like the schema fields) as if its rows arrived
// on `topic`, at `rate_hz`. For demos and tests.
struct ReplayOptions {
  std::string path;
  std::string topic = "replay";
  double rate_hz = 10;
  bool loop = false;
};

struct ControlConfig {
  std::string model_dataset;  // run the global model of jobs that train this dataset
  // Optional: offer the buffered readings as a training dataset of this name, turned into rows by
  // the same Preprocessor as inference (labels from schema.label; unlabeled windows skipped).
  // Labels of those rows: a forecaster's target (the value of `forecast_field` `forecast_horizon`
  // readings after the window), else schema.label (unlabeled windows skipped), else none (all
  // windows, label 0: for autoencoders).
  std::string train_dataset;
  double validation_fraction = 0.2;
  std::string forecast_field;
  uint32_t forecast_horizon = 1;
  // Autoencoders: the `anomaly` signal fires above this quantile of the reconstruction errors
  // of the buffered windows, recomputed for every new model.
  double anomaly_quantile = 0.99;
  // Run MLP models with dynamic int8 Linear layers (4x smaller weights; see README for the
  // accuracy and latency change measured by scripts/bench.sh inference).
  bool int8 = false;
  std::vector<std::string> outputs;  // names of the model's outputs, used by rules
  SensorSchema schema;
  PreprocessSpec preprocess;
  RulesSpec rules;
  std::optional<MqttOptions> mqtt;
  std::optional<ReplayOptions> replay;
  std::optional<BufferOptions> buffer;  // default on, in state_dir/samples.db
  uint32_t deadline_ms = 20;            // sample received -> commands published
  uint32_t queue = 1024;                // readings waiting for the control thread
  double max_rate_hz = 1000;            // per topic; beyond it: dropped as flood
  uint32_t training_pause_ms = 2000;    // training pause after a missed deadline
  std::string status_topic;             // periodic JSON status (counts, latencies); optional
  uint32_t status_interval_s = 30;      // also the period of the log summary
};

// `device_id` is the default MQTT client id; `state_dir` holds the default buffer file;
// relative paths resolve against `base_dir`.
StatusOr<ControlConfig> ParseControlConfig(ConfigMap m, const std::string& device_id,
                                           const std::string& state_dir,
                                           const std::string& base_dir);

}  // namespace fleet::control
