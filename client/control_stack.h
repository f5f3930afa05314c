// Assembles the device's inference and control stack from the `control:` config: on-device
// buffer, control loop, MQTT link and/or CSV replay, and the hooks through which the training
// side hands it verified global models. Starts everything at once and stops it in the safe
// order (replay, then the loop, then the MQTT link it publishes through, then the buffer,
// which commits what is queued).
#pragma once

#include <memory>
#include <string>

#include "client/client_runner.h"
#include "client/control/control_loop.h"
#include "client/control/mqtt_link.h"
#include "client/control/replay_source.h"
#include "client/control/sample_buffer.h"

namespace fleet {

class ControlStack {
 public:
  static StatusOr<std::unique_ptr<ControlStack>> Start(const control::ControlConfig& config,
                                                       const std::string& device_id);
  ~ControlStack();

  // For ClientRunner::Create: global models of config.model_dataset are built into inference
  // models on the runner thread and swapped in; training waits on the loop's gate.
  ControlHooks Hooks();
  control::ControlLoop& loop() { return *loop_; }

 private:
  ControlStack() = default;
  // The buffered readings as training rows (control.train_dataset).
  StatusOr<Dataset> BufferedDataset() const;
  // The configured quantile of `model`'s reconstruction errors over the buffered windows
  // (+inf when there are none: no alarms before the device has seen its normal).
  double AnomalyThreshold(control::InferenceModel& model) const;
  std::unique_ptr<control::SampleBuffer> buffer_;
  std::unique_ptr<control::ControlLoop> loop_;
  std::unique_ptr<control::MqttLink> mqtt_;
  std::unique_ptr<control::ReplaySource> replay_;
};

}  // namespace fleet
