// What a sensor message must look like: a JSON object whose declared fields are finite numbers
// inside their valid range (and float's), with a timestamp, if declared, between 1970 and the
// year 9999. Everything else is dropped with a reason that names the field, and
// counted; nothing here logs payload contents (they are private sensor data).
//
// Pure and thread-compatible: a SensorSchema is immutable after parsing.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.h"
#include "common/status.h"

namespace fleet::control {

struct FieldSpec {
  std::string name;
  // Physically valid range: a value outside it is a sensor fault and the message is dropped.
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  bool required = true;  // optional fields may be absent or null (then: missing-value policy)
  // > 1: a JSON array of exactly `size` numbers (e.g. a feature vector computed on the sensor),
  // each checked against [min, max]; its elements are named "<name>.0", "<name>.1", ...
  uint32_t size = 1;
};

// The latest sample timestamp accepted: 9999-12-31T23:59:59.999Z, in ms since the epoch.
constexpr int64_t kMaxTimestampMs = 253402300799999;

struct SensorSchema {
  std::vector<FieldSpec> fields;
  // Values per reading (the sum of field sizes) and their names, in order.
  size_t width() const;
  std::vector<std::string> value_names() const;
  std::string timestamp_field;  // ms since the epoch; empty: the time of receipt
  std::string label_field;      // optional ground truth kept for local training
  bool allow_extra = false;     // unknown keys are an error unless allowed
  size_t max_payload_bytes = 4096;
};

enum class DropReason {
  kOversized,
  kNotJson,
  kNotObject,
  kMissingField,
  kExtraField,
  kWrongType,
  kNonFinite,
  kOutOfRange,
  kFlood,      // over the per-topic rate limit
  kQueueFull,  // the control loop fell behind; oldest sample dropped
  kCount
};
const char* DropReasonName(DropReason r);

// One validated sensor reading. Missing optional values are NaN until preprocessing fills them.
struct Reading {
  int64_t ts_ms = 0;
  int64_t received_steady_ns = 0;  // for latency accounting, not persisted
  std::vector<float> values;       // SensorSchema::width() values, in field order
  float label = std::numeric_limits<float>::quiet_NaN();
};

struct Rejection {
  DropReason reason;
  std::string detail;  // names the field, never its value
};

// Parses `payload`; on failure fills *why and returns false.
bool ParseReading(const SensorSchema& schema, std::string_view payload, int64_t now_ms,
                  Reading* out, Rejection* why);

// Reads a `schema:` block.
StatusOr<SensorSchema> ParseSensorSchema(ConfigMap m);

}  // namespace fleet::control
