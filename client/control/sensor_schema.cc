#include "client/control/sensor_schema.h"

#include <nlohmann/json.hpp>

#include <cmath>

namespace fleet::control {

const char* DropReasonName(DropReason r) {
  switch (r) {
    case DropReason::kOversized: return "oversized";
    case DropReason::kNotJson: return "not_json";
    case DropReason::kNotObject: return "not_object";
    case DropReason::kMissingField: return "missing_field";
    case DropReason::kExtraField: return "extra_field";
    case DropReason::kWrongType: return "wrong_type";
    case DropReason::kNonFinite: return "non_finite";
    case DropReason::kOutOfRange: return "out_of_range";
    case DropReason::kFlood: return "flood";
    case DropReason::kQueueFull: return "queue_full";
    case DropReason::kCount: break;
  }
  return "unknown";
}

namespace {

bool Reject(Rejection* why, DropReason r, std::string detail) {
  why->reason = r;
  why->detail = std::move(detail);
  return false;
}

// A finite number inside [lo, hi]; NaN in *out for an allowed null.
bool ReadNumber(const nlohmann::json& v, const std::string& name, double lo, double hi,
                bool null_ok, double* out, Rejection* why) {
  if (v.is_null() && null_ok) {
    *out = std::nan("");
    return true;
  }
  if (!v.is_number()) {
    return Reject(why, DropReason::kWrongType,
                  "field '" + name + "' is " + std::string(v.type_name()) + ", not a number");
  }
  double d = v.get<double>();
  if (!std::isfinite(d)) {
    return Reject(why, DropReason::kNonFinite, "field '" + name + "' is not finite");
  }
  if (d < lo || d > hi) {
    return Reject(why, DropReason::kOutOfRange, "field '" + name + "' is outside its range");
  }
  // Values are kept as floats; converting a double beyond float's range is undefined.
  if (std::fabs(d) > std::numeric_limits<float>::max()) {
    return Reject(why, DropReason::kOutOfRange, "field '" + name + "' is outside the float range");
  }
  *out = d;
  return true;
}

}  // namespace

size_t SensorSchema::width() const {
  size_t n = 0;
  for (const FieldSpec& f : fields) n += f.size;
  return n;
}

std::vector<std::string> SensorSchema::value_names() const {
  std::vector<std::string> names;
  for (const FieldSpec& f : fields) {
    if (f.size == 1) {
      names.push_back(f.name);
    } else {
      for (uint32_t i = 0; i < f.size; ++i) names.push_back(f.name + "." + std::to_string(i));
    }
  }
  return names;
}

bool ParseReading(const SensorSchema& schema, std::string_view payload, int64_t now_ms,
                  Reading* out, Rejection* why) {
  if (payload.size() > schema.max_payload_bytes) {
    return Reject(why, DropReason::kOversized,
                  std::to_string(payload.size()) + " bytes > max_payload_bytes " +
                      std::to_string(schema.max_payload_bytes));
  }
  nlohmann::json doc = nlohmann::json::parse(payload, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Reject(why, DropReason::kNotJson, "payload is not JSON");
  if (!doc.is_object()) {
    return Reject(why, DropReason::kNotObject,
                  "payload is a JSON " + std::string(doc.type_name()) + ", not an object");
  }
  out->values.assign(schema.width(), std::nanf(""));
  size_t known = 0;
  size_t at = 0;
  for (const FieldSpec& f : schema.fields) {
    const size_t first = at;
    at += f.size;
    auto it = doc.find(f.name);
    if (it == doc.end()) {
      if (f.required) {
        return Reject(why, DropReason::kMissingField, "field '" + f.name + "' is missing");
      }
      continue;
    }
    ++known;
    double d;
    if (f.size == 1) {
      if (!ReadNumber(*it, f.name, f.min, f.max, !f.required, &d, why)) return false;
      out->values[first] = static_cast<float>(d);
      continue;
    }
    if (it->is_null() && !f.required) continue;
    if (!it->is_array() || it->size() != f.size) {
      return Reject(why, DropReason::kWrongType,
                    "field '" + f.name + "' is not an array of " + std::to_string(f.size) +
                        " numbers");
    }
    for (uint32_t k = 0; k < f.size; ++k) {
      if (!ReadNumber((*it)[k], f.name + "[" + std::to_string(k) + "]", f.min, f.max, false, &d,
                      why)) {
        return false;
      }
      out->values[first + k] = static_cast<float>(d);
    }
  }
  out->ts_ms = now_ms;
  if (!schema.timestamp_field.empty()) {
    auto it = doc.find(schema.timestamp_field);
    if (it == doc.end()) {
      return Reject(why, DropReason::kMissingField,
                    "field '" + schema.timestamp_field + "' is missing");
    }
    ++known;
    if (!it->is_number_integer()) {
      return Reject(why, DropReason::kWrongType,
                    "field '" + schema.timestamp_field + "' is not an integer (ms since epoch)");
    }
    // Sample time drives rule durations and rate limits: 1970 .. the end of year 9999, so
    // differences of two timestamps cannot overflow.
    if (it->is_number_unsigned()
            ? it->get<uint64_t>() > uint64_t{kMaxTimestampMs}
            : (it->get<int64_t>() < 0 || it->get<int64_t>() > kMaxTimestampMs)) {
      return Reject(why, DropReason::kOutOfRange,
                    "field '" + schema.timestamp_field +
                        "' is not a time between 1970 and the year 9999 (ms since epoch)");
    }
    out->ts_ms = it->get<int64_t>();
  }
  out->label = std::nanf("");
  if (!schema.label_field.empty()) {
    auto it = doc.find(schema.label_field);
    if (it != doc.end()) {
      ++known;
      double d;
      if (!ReadNumber(*it, schema.label_field, -1e30, 1e30, true, &d, why)) return false;
      out->label = static_cast<float>(d);
    }
  }
  if (!schema.allow_extra && known != doc.size()) {
    for (auto it = doc.begin(); it != doc.end(); ++it) {
      bool declared = it.key() == schema.timestamp_field || it.key() == schema.label_field;
      for (const FieldSpec& f : schema.fields) declared = declared || f.name == it.key();
      if (!declared) {
        return Reject(why, DropReason::kExtraField,
                      "field '" + it.key() + "' is not in the schema (allow_extra: false)");
      }
    }
  }
  return true;
}

StatusOr<SensorSchema> ParseSensorSchema(ConfigMap m) {
  SensorSchema s;
  RETURN_IF_ERROR(m.Get("timestamp", &s.timestamp_field));
  RETURN_IF_ERROR(m.Get("label", &s.label_field));
  RETURN_IF_ERROR(m.Get("allow_extra", &s.allow_extra));
  uint32_t max_bytes = static_cast<uint32_t>(s.max_payload_bytes);
  RETURN_IF_ERROR(m.Get("max_payload_bytes", &max_bytes));
  if (max_bytes == 0 || max_bytes > (1u << 20)) {
    return InvalidArgument(m.Where("max_payload_bytes") + " must be in [1, 1048576]");
  }
  s.max_payload_bytes = max_bytes;
  if (!m.Has("fields")) return m.MissingKey("fields");
  ASSIGN_OR_RETURN(std::vector<ConfigMap> fields, m.ChildList("fields"));
  if (fields.empty()) return InvalidArgument(m.Where("fields") + " must list at least one field");
  for (ConfigMap& fm : fields) {
    FieldSpec f;
    RETURN_IF_ERROR(fm.Require("name", &f.name));
    RETURN_IF_ERROR(fm.Get("min", &f.min));
    RETURN_IF_ERROR(fm.Get("max", &f.max));
    RETURN_IF_ERROR(fm.Get("required", &f.required));
    RETURN_IF_ERROR(fm.Get("size", &f.size));
    if (f.size == 0 || f.size > 65536) return InvalidArgument(fm.Where("size") + " must be in [1, 65536]");
    RETURN_IF_ERROR(fm.Finish());
    if (!(f.min <= f.max)) return InvalidArgument(fm.Where("min") + " must be <= max");
    for (const FieldSpec& g : s.fields) {
      if (g.name == f.name) {
        return InvalidArgument(fm.Where("name") + ": field '" + f.name + "' is declared twice");
      }
    }
    if (f.name == s.timestamp_field || f.name == s.label_field) {
      return InvalidArgument(fm.Where("name") + ": '" + f.name +
                             "' is already the timestamp or label field");
    }
    s.fields.push_back(std::move(f));
  }
  RETURN_IF_ERROR(m.Finish());
  return s;
}

}  // namespace fleet::control
