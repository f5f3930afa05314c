#include "client/control_stack.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "client/control/inference_model.h"
#include "common/file_util.h"
#include "common/log.h"

namespace fleet {

StatusOr<std::unique_ptr<ControlStack>> ControlStack::Start(const control::ControlConfig& config,
                                                            const std::string& device_id) {
  std::unique_ptr<ControlStack> s(new ControlStack());
  if (config.buffer) {
    const std::string& path = config.buffer->path;
    if (size_t slash = path.rfind('/'); slash != std::string::npos && slash > 0) {
      RETURN_IF_ERROR(MakeDirs(path.substr(0, slash), 0700));  // raw readings: owner-only
    }
    ASSIGN_OR_RETURN(s->buffer_,
                     control::SampleBuffer::Open(*config.buffer, config.schema.width()));
    FLEET_LOG(Info) << "control: sample buffer " << config.buffer->path << " holds "
                    << s->buffer_->stored() << " readings";
  }
  ControlStack* self = s.get();
  auto publish = [self](const std::string& topic, const std::string& payload) {
    if (self->mqtt_) {
      self->mqtt_->Publish(topic, payload);
    } else {
      FLEET_LOG(Info) << "control: command on '" << topic << "': " << payload;
    }
  };
  s->loop_ = std::make_unique<control::ControlLoop>(config, device_id, publish, s->buffer_.get());
  auto on_message = [self](std::string_view topic, std::string_view payload) {
    self->loop_->OnMessage(topic, payload);
  };
  if (config.replay) {
    ASSIGN_OR_RETURN(s->replay_,
                     control::ReplaySource::Open(*config.replay, config.schema, on_message));
  }
  if (config.mqtt) {
    ASSIGN_OR_RETURN(s->mqtt_, control::MqttLink::Start(*config.mqtt, on_message));
  }
  s->loop_->Start();
  if (s->replay_) s->replay_->Start();
  FLEET_LOG(Info) << "control: running the global model of dataset '" << config.model_dataset
                  << "' on " << (config.mqtt ? "mqtt" : "") << (config.mqtt && config.replay ? "+" : "")
                  << (config.replay ? "replay" : "") << ", deadline " << config.deadline_ms << " ms";
  return s;
}

// The loop publishes through mqtt_, so it stops before the link goes; MQTT messages arriving in
// between only queue on the stopped loop.
ControlStack::~ControlStack() {
  replay_.reset();
  if (loop_) loop_->Stop();
  mqtt_.reset();
  buffer_.reset();
}

StatusOr<Dataset> ControlStack::BufferedDataset() const {
  const control::ControlConfig& c = loop_->config();
  uint64_t corrupt = 0;
  ASSIGN_OR_RETURN(std::vector<control::Reading> readings, buffer_->ReadAll(&corrupt));
  if (corrupt > 0) {
    FLEET_LOG(Warn) << "control: " << corrupt << " buffered readings failed their checksum; skipped";
  }
  // Which value a forecaster predicts.
  const std::vector<std::string> names = c.schema.value_names();
  const size_t target = c.forecast_field.empty()
                            ? 0
                            : static_cast<size_t>(std::find(names.begin(), names.end(),
                                                            c.forecast_field) - names.begin());
  // The same preprocessing as the control loop, from a fresh state.
  control::Preprocessor pre(c.preprocess, c.schema.width());
  Dataset d;
  d.cols = pre.output_dim();
  std::vector<float> row(d.cols);
  float label = 0;
  for (size_t i = 0; i < readings.size(); ++i) {
    if (!pre.Push(readings[i], row.data(), &label, nullptr)) continue;
    if (!c.forecast_field.empty()) {
      const size_t ahead = i + c.forecast_horizon;
      if (ahead >= readings.size()) break;
      label = readings[ahead].values[target];
    } else if (c.schema.label_field.empty()) {
      label = 0;  // unlabeled windows (autoencoders)
    }
    if (std::isnan(label)) continue;
    d.features.insert(d.features.end(), row.begin(), row.end());
    d.labels.push_back(label);
    ++d.rows;
  }
  return d;
}

double ControlStack::AnomalyThreshold(control::InferenceModel& model) const {
  if (!buffer_) return std::numeric_limits<double>::infinity();
  StatusOr<Dataset> d = BufferedDataset();
  if (!d.ok() || d->rows == 0 || d->cols != model.input_dim()) {
    return std::numeric_limits<double>::infinity();
  }
  std::vector<float> errors(d->rows);
  for (size_t i = 0; i < d->rows; ++i) {
    if (!model.Run(&d->features[i * d->cols], &errors[i]).ok()) {
      return std::numeric_limits<double>::infinity();
    }
  }
  const double q = loop_->config().anomaly_quantile;
  const size_t k = std::min(errors.size() - 1, static_cast<size_t>(q * static_cast<double>(errors.size())));
  std::nth_element(errors.begin(), errors.begin() + static_cast<std::ptrdiff_t>(k), errors.end());
  return errors[k];
}

ControlHooks ControlStack::Hooks() {
  ControlHooks h;
  if (!loop_->config().train_dataset.empty()) {
    h.buffer_dataset = loop_->config().train_dataset;
    h.validation_fraction = loop_->config().validation_fraction;
    h.read_buffer = [this] { return BufferedDataset(); };
  }
  h.model_dataset = loop_->config().model_dataset;
  h.gate = &loop_->gate();
  control::ControlLoop* loop = loop_.get();
  ControlStack* self = this;
  h.on_global_model = [loop, self](const v1::Task& task, std::vector<float> params) {
    std::string version = task.job_id() + "/round-" + std::to_string(task.round());
    StatusOr<std::shared_ptr<control::InferenceModel>> m =
        control::InferenceModel::Create(task.model(), params, version, loop->config().int8);
    if (m.ok() && (*m)->autoencoder()) {
      (*m)->set_anomaly_threshold(self->AnomalyThreshold(**m));
      FLEET_LOG(Info) << "control: anomaly threshold of " << version << ": "
                      << (*m)->anomaly_threshold() << " (quantile "
                      << self->loop_->config().anomaly_quantile << " of local reconstruction errors)";
    }
    Status s = m.ok() ? loop->SwapModel(*m) : m.status();
    if (!s.ok()) {
      FLEET_LOG(Warn) << "control: model " << version << " not used: " << s.message();
      return;
    }
    FLEET_LOG(Info) << "control: now running model " << version;
  };
  return h;
}

}  // namespace fleet
