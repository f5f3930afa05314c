#include "client/control_stack.h"

#include <cmath>

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
      RETURN_IF_ERROR(MakeDirs(path.substr(0, slash)));
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

ControlStack::~ControlStack() {
  replay_.reset();
  mqtt_.reset();
  if (loop_) loop_->Stop();
  buffer_.reset();
}

StatusOr<Dataset> ControlStack::BufferedDataset() const {
  const control::ControlConfig& c = loop_->config();
  uint64_t corrupt = 0;
  ASSIGN_OR_RETURN(std::vector<control::Reading> readings, buffer_->ReadAll(&corrupt));
  if (corrupt > 0) {
    FLEET_LOG(Warn) << "control: " << corrupt << " buffered readings failed their checksum; skipped";
  }
  // The same preprocessing as the control loop, from a fresh state.
  control::Preprocessor pre(c.preprocess, c.schema.width());
  Dataset d;
  d.cols = pre.output_dim();
  std::vector<float> row(d.cols);
  float label = 0;
  for (const control::Reading& r : readings) {
    if (!pre.Push(r, row.data(), &label, nullptr) || std::isnan(label)) continue;
    d.features.insert(d.features.end(), row.begin(), row.end());
    d.labels.push_back(label);
    ++d.rows;
  }
  return d;
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
  h.on_global_model = [loop](const v1::Task& task, std::vector<float> params) {
    std::string version = task.job_id() + "/round-" + std::to_string(task.round());
    StatusOr<std::shared_ptr<control::InferenceModel>> m =
        control::InferenceModel::Create(task.model(), params, version);
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
