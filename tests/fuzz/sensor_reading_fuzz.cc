// Fuzz target: sensor messages as they arrive over MQTT (client/control/sensor_schema.h
// ParseReading: JSON against the declared schema), then through the preprocessing the control
// loop runs on every accepted reading (client/control/preprocess.h: missing values, clipping,
// normalization, windows, window features).
//
// Input: bytes 0-3 pick the schema (fields, array sizes, ranges, optional fields, timestamp and
// label fields, extra keys) and the preprocessing (window, stride, missing-value policy,
// normalization, features); the rest is one or more payloads separated by 0x1e. Checks beyond
// "no crash": an accepted reading has one value per schema slot, each inside its declared range
// (or NaN for an absent optional value), a timestamp between 1970 and the year 9999, and a
// finite label or none; every preprocessed row is finite.
#include <cmath>
#include <string>
#include <vector>

#include "client/control/preprocess.h"
#include "client/control/sensor_schema.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fleet;
  using namespace fleet::control;
  fuzz::Input in(data, size);
  const uint8_t a = in.Byte(), b = in.Byte(), c = in.Byte(), d = in.Byte();
  SensorSchema schema;
  static const char* const kNames[] = {"t", "h", "acc", "x"};
  const int fields = 1 + (a & 3);
  for (int i = 0; i < fields; ++i) {
    FieldSpec f;
    f.name = kNames[i];
    const uint8_t bits = static_cast<uint8_t>(b >> (2 * i));
    f.required = (bits & 1) == 0;
    if (bits & 2) {
      f.min = -50;
      f.max = 50;
    }
    if (i == 2 && (a & 4)) f.size = 3;
    schema.fields.push_back(f);
  }
  if (a & 8) schema.timestamp_field = "ts";
  if (a & 16) schema.label_field = "label";
  schema.allow_extra = (a & 32) != 0;

  PreprocessSpec pre;
  pre.window = 1 + (c & 3);
  pre.stride = 1 + ((c >> 2) & 3) % pre.window;
  pre.missing = static_cast<MissingPolicy>(((c >> 4) & 3) % 3);
  const size_t width = schema.width();
  if (c & 0x40) {
    pre.normalize_mean.assign(width, 1.0);
    pre.normalize_std.assign(width, (c & 0x80) ? 1e-6 : 3.0);
  }
  if (d & 1) {
    pre.clip_min.assign(width, -10.0);
    pre.clip_max.assign(width, 10.0);
  }
  pre.features.clear();
  for (int k = 0; k < 6; ++k) {
    if (d & (2 << k)) pre.features.push_back(static_cast<WindowFeature>(k));
  }
  if (pre.features.empty()) pre.features.push_back(WindowFeature::kRaw);
  Preprocessor prep(pre, width);
  std::vector<float> row(prep.output_dim());

  const std::string rest(in.Rest());
  constexpr int64_t kNowMs = 1'800'000'000'000;
  constexpr int64_t kYear9999Ms = 253402300799999;
  size_t start = 0;
  while (start <= rest.size()) {
    size_t end = rest.find('\x1e', start);
    if (end == std::string::npos) end = rest.size();
    const std::string_view payload = std::string_view(rest).substr(start, end - start);
    start = end + 1;
    Reading r;
    Rejection why;
    if (!ParseReading(schema, payload, kNowMs, &r, &why)) {
      FUZZ_CHECK(why.reason < DropReason::kCount, "bad drop reason");
      continue;
    }
    FUZZ_CHECK(r.values.size() == width, "%zu values for %zu slots", r.values.size(), width);
    size_t at = 0;
    for (const FieldSpec& f : schema.fields) {
      for (uint32_t k = 0; k < f.size; ++k, ++at) {
        const float v = r.values[at];
        if (std::isnan(v)) {
          FUZZ_CHECK(!f.required, "required field %s missing", f.name.c_str());
          continue;
        }
        FUZZ_CHECK(std::isfinite(v) && v >= f.min && v <= f.max,
                   "field %s value outside its range accepted", f.name.c_str());
      }
    }
    FUZZ_CHECK(r.ts_ms >= 0 && r.ts_ms <= kYear9999Ms, "timestamp %lld accepted",
               static_cast<long long>(r.ts_ms));
    FUZZ_CHECK(std::isnan(r.label) || std::isfinite(r.label), "infinite label");
    float label = 0;
    std::vector<float> raw;
    if (prep.Push(r, row.data(), &label, &raw)) {
      for (float x : row) FUZZ_CHECK(std::isfinite(x), "preprocessing produced a non-finite value");
    }
  }
  return 0;
}
