#include "client/control/control_config.h"

#include <algorithm>

namespace fleet::control {

namespace {
std::string Resolve(const std::string& base, const std::string& p) {
  if (p.empty() || p[0] == '/' || base.empty()) return p;
  return base + "/" + p;
}
}  // namespace

StatusOr<ControlConfig> ParseControlConfig(ConfigMap m, const std::string& device_id,
                                           const std::string& state_dir,
                                           const std::string& base_dir) {
  ControlConfig c;
  RETURN_IF_ERROR(m.Require("model_dataset", &c.model_dataset));
  RETURN_IF_ERROR(m.Require("outputs", &c.outputs));
  RETURN_IF_ERROR(m.Get("train_dataset", &c.train_dataset));
  RETURN_IF_ERROR(m.Get("validation_fraction", &c.validation_fraction));
  if (!(c.validation_fraction >= 0 && c.validation_fraction < 1)) {
    return InvalidArgument(m.Where("validation_fraction") + " must be in [0, 1)");
  }
  RETURN_IF_ERROR(m.Get("int8", &c.int8));
  RETURN_IF_ERROR(m.Get("anomaly_quantile", &c.anomaly_quantile));
  if (!(c.anomaly_quantile > 0 && c.anomaly_quantile < 1)) {
    return InvalidArgument(m.Where("anomaly_quantile") + " must be in (0, 1)");
  }
  if (m.Has("forecast")) {
    ASSIGN_OR_RETURN(ConfigMap fc, m.Child("forecast"));
    RETURN_IF_ERROR(fc.Require("field", &c.forecast_field));
    RETURN_IF_ERROR(fc.Get("horizon", &c.forecast_horizon));
    if (c.forecast_horizon == 0 || c.forecast_horizon > 10000) {
      return InvalidArgument(fc.Where("horizon") + " must be in [1, 10000] readings");
    }
    RETURN_IF_ERROR(fc.Finish());
  }
  if (c.outputs.empty()) return InvalidArgument(m.Where("outputs") + " must name the model's outputs");
  for (size_t i = 0; i < c.outputs.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (c.outputs[i] == c.outputs[j]) {
        return InvalidArgument(m.Where("outputs") + ": '" + c.outputs[i] + "' is named twice");
      }
    }
  }
  if (!m.Has("schema")) return m.MissingKey("schema");
  ASSIGN_OR_RETURN(ConfigMap schema, m.Child("schema"));
  ASSIGN_OR_RETURN(c.schema, ParseSensorSchema(std::move(schema)));
  const std::vector<std::string> fields = c.schema.value_names();
  ASSIGN_OR_RETURN(ConfigMap pre, m.Child("preprocess"));
  ASSIGN_OR_RETURN(c.preprocess, ParsePreprocessSpec(std::move(pre), fields));
  SignalNames names(c.outputs, fields);
  ASSIGN_OR_RETURN(c.rules, ParseRules(m, names));

  if (m.Has("mqtt")) {
    ASSIGN_OR_RETURN(ConfigMap mq, m.Child("mqtt"));
    ASSIGN_OR_RETURN(MqttOptions o, ParseMqttOptions(std::move(mq), device_id));
    o.tls_ca = Resolve(base_dir, o.tls_ca);
    o.tls_cert = Resolve(base_dir, o.tls_cert);
    o.tls_key = Resolve(base_dir, o.tls_key);
    c.mqtt = std::move(o);
  }
  if (m.Has("replay")) {
    ASSIGN_OR_RETURN(ConfigMap rp, m.Child("replay"));
    ReplayOptions r;
    RETURN_IF_ERROR(rp.Require("path", &r.path));
    r.path = Resolve(base_dir, r.path);
    RETURN_IF_ERROR(rp.Get("topic", &r.topic));
    RETURN_IF_ERROR(rp.Get("rate_hz", &r.rate_hz));
    RETURN_IF_ERROR(rp.Get("loop", &r.loop));
    if (!(r.rate_hz > 0 && r.rate_hz <= 100000)) {
      return InvalidArgument(rp.Where("rate_hz") + " must be in (0, 100000]");
    }
    RETURN_IF_ERROR(rp.Finish());
    c.replay = std::move(r);
  }
  ASSIGN_OR_RETURN(ConfigMap buf, m.Child("buffer"));
  bool enabled = true;
  RETURN_IF_ERROR(buf.Get("enabled", &enabled));
  if (enabled) {
    BufferOptions b;
    b.path = state_dir + "/samples.db";
    RETURN_IF_ERROR(buf.Get("path", &b.path));
    b.path = Resolve(base_dir, b.path);
    RETURN_IF_ERROR(buf.Get("max_samples", &b.max_samples));
    if (b.max_samples == 0) return InvalidArgument(buf.Where("max_samples") + " must be >= 1");
    std::string age;
    RETURN_IF_ERROR(buf.Get("max_age", &age));
    if (!age.empty()) {
      StatusOr<int64_t> s = ParseDurationSeconds(age);
      if (!s.ok()) return InvalidArgument(buf.Where("max_age") + ": " + s.status().message());
      b.max_age_s = *s;
    }
    RETURN_IF_ERROR(buf.Get("commit_interval_ms", &b.commit_interval_ms));
    if (b.commit_interval_ms == 0 || b.commit_interval_ms > 10000) {
      return InvalidArgument(buf.Where("commit_interval_ms") + " must be in [1, 10000]");
    }
    c.buffer = std::move(b);
  }
  RETURN_IF_ERROR(buf.Finish());
  RETURN_IF_ERROR(m.Get("deadline_ms", &c.deadline_ms));
  if (c.deadline_ms == 0) return InvalidArgument(m.Where("deadline_ms") + " must be >= 1");
  RETURN_IF_ERROR(m.Get("queue", &c.queue));
  if (c.queue == 0 || c.queue > 1'000'000) return InvalidArgument(m.Where("queue") + " must be in [1, 1000000]");
  RETURN_IF_ERROR(m.Get("max_rate_hz", &c.max_rate_hz));
  if (!(c.max_rate_hz > 0)) return InvalidArgument(m.Where("max_rate_hz") + " must be > 0");
  RETURN_IF_ERROR(m.Get("training_pause_ms", &c.training_pause_ms));
  RETURN_IF_ERROR(m.Get("status_topic", &c.status_topic));
  RETURN_IF_ERROR(m.Get("status_interval_s", &c.status_interval_s));
  if (c.status_interval_s == 0) return InvalidArgument(m.Where("status_interval_s") + " must be >= 1");
  RETURN_IF_ERROR(m.Finish());
  if (!c.mqtt && !c.replay) {
    return InvalidArgument(m.Where("mqtt") + ": give a sensor source (mqtt or replay)");
  }
  if (!c.train_dataset.empty() && !c.buffer) {
    return InvalidArgument(m.Where("train_dataset") + " needs the sample buffer");
  }
  if (!c.forecast_field.empty()) {
    if (std::find(fields.begin(), fields.end(), c.forecast_field) == fields.end()) {
      return InvalidArgument(m.Where("forecast") + ": field '" + c.forecast_field +
                             "' is not in the schema");
    }
  }
  return c;
}

}  // namespace fleet::control
