// Unit tests for the torch-free parts of the control loop: sensor schema validation,
// preprocessing, the rule engine, the latency histogram, the durable sample buffer and the
// `control:` config.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sqlite3.h>
#include <sys/stat.h>

#include <cmath>
#include <limits>
#include <thread>

#include "client/client_config.h"
#include "client/control/control_config.h"
#include "client/control/preprocess.h"
#include "client/control/rules.h"
#include "client/control/sample_buffer.h"
#include "client/control/sensor_schema.h"
#include "common/latency_histogram.h"
#include "tests/unit/test_util.h"

namespace fleet::control {
namespace {

SensorSchema RoomSchema() {
  SensorSchema s;
  s.fields = {{"Light", 0, 5000, true, 1}, {"CO2", 0, 10000, false, 1}};
  s.timestamp_field = "ts";
  s.label_field = "Occupancy";
  s.max_payload_bytes = 256;
  return s;
}

struct Bad {
  const char* payload;
  DropReason reason;
  const char* detail_has;
};

TEST(SensorSchema, AcceptsAValidReadingAndNullForAnOptionalField) {
  Reading r;
  Rejection why;
  ASSERT_TRUE(ParseReading(RoomSchema(), R"({"ts": 1700000000000, "Light": 420.5, "CO2": 610,
                                            "Occupancy": 1})", 5, &r, &why)) << why.detail;
  EXPECT_EQ(r.ts_ms, 1700000000000);
  ASSERT_EQ(r.values.size(), 2u);
  EXPECT_FLOAT_EQ(r.values[0], 420.5f);
  EXPECT_FLOAT_EQ(r.values[1], 610.f);
  EXPECT_FLOAT_EQ(r.label, 1.f);
  ASSERT_TRUE(ParseReading(RoomSchema(), R"({"ts": 1, "Light": 0, "CO2": null})", 5, &r, &why));
  EXPECT_TRUE(std::isnan(r.values[1]));
  EXPECT_TRUE(std::isnan(r.label));
}

TEST(SensorSchema, RejectsEveryBadInputClassNamingTheFieldNeverTheValue) {
  const std::string big = R"({"ts": 1, "Light": 1, "pad": ")" + std::string(300, 'x') + "\"}";
  const Bad cases[] = {
      {"{not json", DropReason::kNotJson, "not JSON"},
      {"", DropReason::kNotJson, "not JSON"},
      {"[1, 2]", DropReason::kNotObject, "array"},
      {R"({"ts": 1})", DropReason::kMissingField, "'Light'"},
      {R"({"Light": 3})", DropReason::kMissingField, "'ts'"},
      {R"({"ts": 1, "Light": 3, "Door": 1})", DropReason::kExtraField, "'Door'"},
      {R"({"ts": 1, "Light": "bright"})", DropReason::kWrongType, "'Light' is string"},
      {R"({"ts": 1, "Light": true})", DropReason::kWrongType, "'Light' is boolean"},
      {R"({"ts": "now", "Light": 3})", DropReason::kWrongType, "'ts'"},
      // JSON has no NaN or Inf: both, and overflowing numbers, fail to parse.
      {R"({"ts": 1, "Light": 1e999})", DropReason::kNotJson, "not JSON"},
      {R"({"ts": 1, "Light": NaN})", DropReason::kNotJson, "not JSON"},
      {R"({"ts": 1, "Light": -3})", DropReason::kOutOfRange, "'Light'"},
      {R"({"ts": 1, "Light": 3, "CO2": 20000})", DropReason::kOutOfRange, "'CO2'"},
      {big.c_str(), DropReason::kOversized, "max_payload_bytes 256"},
  };
  for (const Bad& b : cases) {
    Reading r;
    Rejection why;
    EXPECT_FALSE(ParseReading(RoomSchema(), b.payload, 5, &r, &why)) << b.payload;
    EXPECT_EQ(why.reason, b.reason) << b.payload << " -> " << why.detail;
    EXPECT_NE(why.detail.find(b.detail_has), std::string::npos) << why.detail;
    EXPECT_EQ(why.detail.find("20000"), std::string::npos) << "values are private";
  }
}

TEST(SensorSchema, ArrayFieldsAreCheckedElementByElement) {
  SensorSchema s;
  s.fields = {{"f", -1, 1, true, 3}};
  Reading r;
  Rejection why;
  ASSERT_TRUE(ParseReading(s, R"({"f": [0.5, -1, 1]})", 7, &r, &why)) << why.detail;
  EXPECT_EQ(r.values, (std::vector<float>{0.5f, -1.f, 1.f}));
  EXPECT_EQ(r.ts_ms, 7);  // no timestamp field: time of receipt
  EXPECT_FALSE(ParseReading(s, R"({"f": [0.5, -1]})", 7, &r, &why));
  EXPECT_EQ(why.reason, DropReason::kWrongType);
  EXPECT_FALSE(ParseReading(s, R"({"f": [0.5, -1, 2]})", 7, &r, &why));
  EXPECT_EQ(why.reason, DropReason::kOutOfRange);
  EXPECT_NE(why.detail.find("f[2]"), std::string::npos);
  EXPECT_EQ(s.value_names(), (std::vector<std::string>{"f.0", "f.1", "f.2"}));
}

Reading At(std::vector<float> v, float label = 0) {
  Reading r;
  r.values = std::move(v);
  r.label = label;
  return r;
}

TEST(Preprocess, WindowStrideAndStatisticFeatures) {
  PreprocessSpec spec;
  spec.window = 4;
  spec.stride = 2;
  spec.features = {WindowFeature::kMean, WindowFeature::kStd, WindowFeature::kMin,
                   WindowFeature::kMax, WindowFeature::kEnergy};
  Preprocessor p(spec, 1);
  ASSERT_EQ(p.output_dim(), 5u);
  std::vector<float> row(5);
  float label;
  std::vector<int> emitted;
  for (int i = 1; i <= 9; ++i) {
    if (p.Push(At({static_cast<float>(i)}, static_cast<float>(i)), row.data(), &label, nullptr)) {
      emitted.push_back(i);
      if (i == 4) {  // window {1,2,3,4}
        EXPECT_FLOAT_EQ(row[0], 2.5f);
        EXPECT_NEAR(row[1], std::sqrt(1.25), 1e-6);
        EXPECT_FLOAT_EQ(row[2], 1.f);
        EXPECT_FLOAT_EQ(row[3], 4.f);
        EXPECT_FLOAT_EQ(row[4], 7.5f);  // (1+4+9+16)/4
        EXPECT_FLOAT_EQ(label, 4.f);
      }
    }
  }
  EXPECT_EQ(emitted, (std::vector<int>{4, 6, 8}));
}

TEST(Preprocess, RawWindowIsTimeMajorAfterClipAndNormalize) {
  PreprocessSpec spec;
  spec.window = 2;
  spec.clip_min = {0, 0};
  spec.clip_max = {10, 100};
  spec.normalize_mean = {5, 50};
  spec.normalize_std = {5, 50};
  Preprocessor p(spec, 2);
  std::vector<float> row(4), raw;
  float label;
  EXPECT_FALSE(p.Push(At({20, 50}), row.data(), &label, &raw));
  EXPECT_EQ(raw, (std::vector<float>{20, 50}));  // raw signals are not clipped or normalized
  ASSERT_TRUE(p.Push(At({0, 100}), row.data(), &label, &raw));
  EXPECT_EQ(row, (std::vector<float>{1, 0, -1, 1}));  // 20 clipped to 10
}

TEST(Preprocess, MissingValuePolicies) {
  const float nan = std::nanf("");
  std::vector<float> row(1), raw;
  float label;
  PreprocessSpec ffill;
  Preprocessor f(ffill, 1);
  f.Push(At({2}), row.data(), &label, &raw);
  f.Push(At({6}), row.data(), &label, &raw);
  ASSERT_TRUE(f.Push(At({nan}), row.data(), &label, &raw));
  EXPECT_FLOAT_EQ(row[0], 6.f);

  PreprocessSpec mean;
  mean.missing = MissingPolicy::kMean;
  Preprocessor m(mean, 1);
  m.Push(At({2}), row.data(), &label, &raw);
  m.Push(At({6}), row.data(), &label, &raw);
  ASSERT_TRUE(m.Push(At({nan}), row.data(), &label, &raw));
  EXPECT_FLOAT_EQ(row[0], 4.f);

  PreprocessSpec drop;
  drop.missing = MissingPolicy::kDrop;
  Preprocessor d(drop, 1);
  EXPECT_FALSE(d.Push(At({nan}), row.data(), &label, &raw));
  EXPECT_TRUE(d.Push(At({1}), row.data(), &label, &raw));

  PreprocessSpec prior;  // nothing seen yet: the declared normalization mean, i.e. 0 after it
  prior.normalize_mean = {50};
  prior.normalize_std = {10};
  Preprocessor q(prior, 1);
  ASSERT_TRUE(q.Push(At({nan}), row.data(), &label, &raw));
  EXPECT_FLOAT_EQ(row[0], 0.f);
}

// Config text -> ControlConfig, through the real parser.
StatusOr<ControlConfig> Parse(const std::string& yaml) {
  ASSIGN_OR_RETURN(YAML::Node n, ParseYaml(yaml, "control.yaml"));
  ASSIGN_OR_RETURN(ConfigMap m, ConfigMap::Create(n, "control.yaml"));
  return ParseControlConfig(std::move(m), "room-1", "/tmp/state", "/base");
}

const char* kRoom = R"(
model_dataset: uci-occupancy
outputs: [vacant, occupied]
schema:
  timestamp: ts
  fields:
    - {name: Light, min: 0, max: 5000}
    - {name: CO2, min: 0, max: 10000}
mqtt: {broker: "127.0.0.1:1883", topics: [room/1/sensors]}
default_action: {topic: room/1/hvac, command: {setpoint: comfort}}
rules:
  - name: occupied
    when: occupied > 0.8
    for_windows: 2
    release_when: occupied < 0.3
    publish: {topic: room/1/hvac, command: {setpoint: comfort, celsius: 21.5}}
    on_release: {topic: room/1/hvac, command: {setpoint: idle}}
  - name: vacant
    when: occupied < 0.2
    for: 15m
    min_interval: 1h
    publish: {topic: room/1/hvac, command: {setpoint: eco}}
  - name: dark
    when: raw.Light < 5 and raw.CO2 <= 450
    publish: {topic: room/1/lights, command: {lights: "off"}}
)";

std::vector<float> Signals(float occupied, float light = 300, float co2 = 600) {
  // vacant, occupied, class, confidence, anomaly, raw.Light, raw.CO2
  return {1 - occupied, occupied, occupied > 0.5f ? 1.f : 0.f, std::max(occupied, 1 - occupied),
          0.f, light, co2};
}

TEST(Rules, HysteresisForWindowsAndRelease) {
  StatusOr<ControlConfig> c = Parse(kRoom);
  ASSERT_TRUE(c.ok()) << c.status().message();
  RuleEngine e(c->rules, "room-1");
  std::vector<Command> out;
  e.Evaluate(Signals(0.9f), "job/round-1", 1000, &out);
  EXPECT_TRUE(out.empty()) << "one window is not enough (for_windows: 2)";
  e.Evaluate(Signals(0.9f), "job/round-1", 2000, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].topic, "room/1/hvac");
  nlohmann::json j = nlohmann::json::parse(out[0].payload);
  EXPECT_EQ(j["setpoint"], "comfort");
  EXPECT_EQ(j["celsius"], 21.5);
  EXPECT_EQ(j["rule"], "occupied");
  EXPECT_EQ(j["event"], "fire");
  EXPECT_EQ(j["model_version"], "job/round-1");
  EXPECT_EQ(j["ts_ms"], 2000);
  EXPECT_EQ(j["device"], "room-1");
  out.clear();
  // Between the thresholds nothing changes: no chatter around 0.5.
  for (float p : {0.5f, 0.6f, 0.4f, 0.31f, 0.9f}) e.Evaluate(Signals(p), "v", 3000, &out);
  EXPECT_TRUE(out.empty());
  EXPECT_TRUE(e.active(0));
  e.Evaluate(Signals(0.25f), "v", 4000, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(out[0].payload)["event"], "release");
  EXPECT_EQ(nlohmann::json::parse(out[0].payload)["setpoint"], "idle");
  EXPECT_FALSE(e.active(0));
}

TEST(Rules, DurationInSampleTimeAndRateLimit) {
  StatusOr<ControlConfig> c = Parse(kRoom);
  ASSERT_TRUE(c.ok()) << c.status().message();
  RuleEngine e(c->rules, "room-1");
  std::vector<Command> out;
  const int64_t min = 60'000;
  for (int64_t t = 0; t < 15 * min; t += min) e.Evaluate(Signals(0.1f), "v", t, &out);
  EXPECT_TRUE(out.empty()) << "vacant needs 15 minutes";
  e.Evaluate(Signals(0.1f), "v", 15 * min, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(out[0].payload)["setpoint"], "eco");
  out.clear();
  // Occupied briefly, then vacant again for 15 min: within the 1 h min_interval -> suppressed.
  e.Evaluate(Signals(0.5f), "v", 16 * min, &out);
  for (int64_t t = 17 * min; t <= 33 * min; t += min) e.Evaluate(Signals(0.1f), "v", t, &out);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(e.rate_limited(), 1u);
}

TEST(Rules, DefaultActionWithoutModelAndRawSignalRulesStillRun) {
  StatusOr<ControlConfig> c = Parse(kRoom);
  ASSERT_TRUE(c.ok()) << c.status().message();
  RuleEngine e(c->rules, "room-1");
  std::vector<Command> out;
  e.EmitDefault(10, &out);
  e.Evaluate(Signals(0.95f, 1, 400), "", 20, &out);  // no model: model rules do not run
  e.Evaluate(Signals(0.95f, 1, 400), "", 30, &out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(out[0].payload)["event"], "no_model");
  EXPECT_EQ(nlohmann::json::parse(out[0].payload)["setpoint"], "comfort");
  EXPECT_EQ(out[1].topic, "room/1/lights");
  EXPECT_EQ(nlohmann::json::parse(out[1].payload)["lights"], "off");
  out.clear();
  e.Evaluate(Signals(0.95f), "m/round-1", 40, &out);  // model arrives: no new default
  e.Evaluate(Signals(0.95f), "", 50, &out);           // model lost again: default once more
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(out[0].payload)["event"], "no_model");
}

TEST(ControlConfig, RejectsBadValuesNamingTheKey) {
  struct Case {
    std::string from, to, expect;
  };
  const Case cases[] = {
      {"when: occupied > 0.8", "when: busy > 0.8", "unknown signal 'busy'"},
      {"when: occupied > 0.8", "when: occupied >> 0.8", "operator '>>'"},
      {"when: occupied > 0.8", "when: occupied > high", "'high' is not a number"},
      {"when: occupied > 0.8", "when: occupied > 0.8 or", "expected 'and'"},
      {"for: 15m", "for: soon", "rules[1].for"},
      {"broker: \"127.0.0.1:1883\"", "broker: \"localhost\"", "expected host:port"},
      {"topics: [room/1/sensors]", "topics: [\"room/#/x\"]", "not a valid topic filter"},
      {"topic: room/1/lights", "topic: room/+/lights", "without wildcards"},
      {"max: 5000}", "max: 5000, size: 0}", "size"},
      {"outputs: [vacant, occupied]", "outputs: [vacant, vacant]", "named twice"},
      {"- name: vacant", "- name: occupied", "declared twice"},
      {"mqtt: {broker", "mqttx: {broker", "mqttx"},
  };
  for (const Case& k : cases) {
    std::string text = kRoom;
    size_t at = text.find(k.from);
    ASSERT_NE(at, std::string::npos) << k.from;
    text.replace(at, k.from.size(), k.to);
    StatusOr<ControlConfig> c = Parse(text);
    ASSERT_FALSE(c.ok()) << k.to;
    EXPECT_NE(c.status().message().find(k.expect), std::string::npos)
        << k.to << " -> " << c.status().message();
    EXPECT_NE(c.status().message().find("control.yaml"), std::string::npos)
        << c.status().message();
  }
}

TEST(ControlConfig, PreprocessLengthsMustMatchTheSchema) {
  std::string text = std::string(kRoom) + "preprocess: {window: 3, normalize: {mean: [1], std: [1]}}\n";
  StatusOr<ControlConfig> c = Parse(text);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("has 1 values; the schema has 2 fields"), std::string::npos)
      << c.status().message();
  text = std::string(kRoom) + "preprocess: {window: 3, stride: 4}\n";
  c = Parse(text);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("stride"), std::string::npos) << c.status().message();
  c = Parse(std::string(kRoom) + "preprocess: {window: 8, stride: 4, features: [mean, max]}\n");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(Preprocessor(c->preprocess, 2).output_dim(), 4u);
  EXPECT_EQ(c->buffer->path, "/tmp/state/samples.db");
}

TEST(ControlConfig, ShippedExamplesLoad) {
  for (const char* name : {"occupancy-control.yaml", "har-fall-alert.yaml"}) {
    StatusOr<ClientConfig> c =
        LoadClientConfig(std::string(FLEET_SOURCE_DIR) + "/configs/clients/" + name);
    ASSERT_TRUE(c.ok()) << name << ": " << c.status().message();
    ASSERT_TRUE(c->control.has_value()) << name;
    EXPECT_FALSE(c->control->rules.rules.empty()) << name;
    EXPECT_TRUE(c->control->rules.default_action.has_value()) << name;
    EXPECT_TRUE(c->control->mqtt.has_value()) << name;
  }
}

// Fuzz findings (tests/fuzz/corpus/sensor_reading): a value beyond float's range, in a field
// without declared bounds, was converted to float anyway (undefined behaviour); a timestamp
// anywhere in int64 went on to the rules, where differences of two of them overflowed.
TEST(SensorSchema, ValuesBeyondTheFloatRangeAndTimestampsOutside1970To9999AreDropped) {
  SensorSchema s;
  s.fields = {{"x", -std::numeric_limits<double>::infinity(),
               std::numeric_limits<double>::infinity(), true, 1}};
  s.timestamp_field = "ts";
  Reading r;
  Rejection why;
  ASSERT_TRUE(ParseReading(s, R"({"x": 3.0e38, "ts": 0})", 5, &r, &why)) << why.detail;
  ASSERT_TRUE(ParseReading(s, R"({"x": 1, "ts": 253402300799999})", 5, &r, &why));
  EXPECT_EQ(r.ts_ms, kMaxTimestampMs);
  for (const char* payload : {R"({"x": 1e300, "ts": 1})", R"({"x": -3.5e38, "ts": 1})"}) {
    ASSERT_FALSE(ParseReading(s, payload, 5, &r, &why)) << payload;
    EXPECT_EQ(why.reason, DropReason::kOutOfRange);
    EXPECT_EQ(why.detail, "field 'x' is outside the float range");
  }
  for (const char* payload :
       {R"({"x": 1, "ts": -1})", R"({"x": 1, "ts": 253402300800000})",
        R"({"x": 1, "ts": -9223372036854775808})", R"({"x": 1, "ts": 18446744073709551615})"}) {
    ASSERT_FALSE(ParseReading(s, payload, 5, &r, &why)) << payload;
    EXPECT_EQ(why.reason, DropReason::kOutOfRange) << payload;
    EXPECT_NE(why.detail.find("'ts' is not a time between 1970 and the year 9999"),
              std::string::npos)
        << why.detail;
  }
}

// Fuzz finding (tests/fuzz/corpus/sensor_reading): normalized values, squares and sums of
// readings near float's limit were converted to float however large (undefined behaviour).
TEST(Preprocess, FeaturesSaturateAtTheFloatRange) {
  PreprocessSpec spec;
  spec.window = 2;
  spec.normalize_mean = {0};
  spec.normalize_std = {1e-6};
  spec.features = {WindowFeature::kRaw, WindowFeature::kEnergy, WindowFeature::kStd};
  Preprocessor p(spec, 1);
  std::vector<float> row(p.output_dim());
  float label;
  EXPECT_FALSE(p.Push(At({3e38f}), row.data(), &label, nullptr));
  ASSERT_TRUE(p.Push(At({-3e38f}), row.data(), &label, nullptr));
  const float max = std::numeric_limits<float>::max();
  EXPECT_EQ(row, (std::vector<float>{max, -max, max, max}));
}

// Fuzz findings (tests/fuzz/corpus/rules): command objects were converted to JSON without
// checks, so a string that is not UTF-8 or a key that is not a string threw out of the config
// parser, a few nested YAML aliases expanded into millions of values, and an integer too large
// for int64 silently became 9223372036854775807; durations overflowed as milliseconds.
TEST(Rules, CommandsAreCheckedUtf8BoundedJson) {
  struct Case {
    std::string from, to, expect;
  };
  const std::string bomb =
      "{a: &a [1, 2, 3, 4, 5, 6, 7, 8], b: &b [*a, *a, *a, *a, *a, *a, *a, *a], "
      "c: &c [*b, *b, *b, *b, *b, *b, *b, *b], d: [*c, *c, *c, *c, *c, *c, *c, *c]}";
  const Case cases[] = {
      {"command: {setpoint: eco}", "command: {setpoint: \"ec\xff\"}",
       "rules[1].publish.command' has a string that is not valid UTF-8"},
      {"command: {setpoint: eco}", "command: {\"se\xc3\": eco}", "a key that is not valid UTF-8"},
      {"command: {setpoint: eco}", "command: {? [a, b] : eco}", "a key that is not a string"},
      {"command: {setpoint: eco}", "command: " + bomb, "is larger than 1024 values"},
      {"for: 15m", "for: 999999999999d", "longer than 100 years"},
      {"min_interval: 1h", "min_interval: 36526d", "longer than 100 years"},
  };
  for (const Case& k : cases) {
    std::string text = kRoom;
    size_t at = text.find(k.from);
    ASSERT_NE(at, std::string::npos) << k.from;
    text.replace(at, k.from.size(), k.to);
    StatusOr<ControlConfig> c = Parse(text);
    ASSERT_FALSE(c.ok()) << k.to;
    EXPECT_NE(c.status().message().find(k.expect), std::string::npos)
        << k.to << " -> " << c.status().message();
  }
  std::string text = kRoom;
  text.replace(text.find("{setpoint: eco}"), 15,
               "{setpoint: eco, big: 99999999999999999999, n: -12, x: 1.5, s: nan, q: '7'}");
  StatusOr<ControlConfig> c = Parse(text);
  ASSERT_TRUE(c.ok()) << c.status().message();
  const nlohmann::json j = nlohmann::json::parse(c->rules.rules[1].publish.command_json);
  EXPECT_EQ(j["big"], 1e20);
  EXPECT_EQ(j["n"], -12);
  EXPECT_EQ(j["x"], 1.5);
  EXPECT_EQ(j["s"], "nan");
  EXPECT_EQ(j["q"], "7");
}

TEST(LatencyHistogram, PercentilesWithinBucketResolution) {
  LatencyHistogram h;
  EXPECT_EQ(h.Percentile(99), 0u);
  for (uint64_t us = 1; us <= 1000; ++us) h.Record(us);
  EXPECT_EQ(h.count(), 1000u);
  EXPECT_NEAR(static_cast<double>(h.Percentile(50)), 500, 500 * 0.13);
  EXPECT_NEAR(static_cast<double>(h.Percentile(99)), 990, 990 * 0.13);
  EXPECT_EQ(h.Percentile(100), 1000u);
  h.Record(123456789);
  EXPECT_EQ(h.max(), 123456789u);
}

TEST(SampleBuffer, CommittedReadingsSurviveReopenAndRetentionKeepsTheNewest) {
  testing::TempDir dir;
  BufferOptions o;
  o.path = dir.path() + "/samples.db";
  o.max_samples = 50;
  o.commit_interval_ms = 5;
  {
    auto b = SampleBuffer::Open(o, 2);
    ASSERT_TRUE(b.ok()) << b.status().message();
    for (int i = 0; i < 80; ++i) {
      Reading r = At({static_cast<float>(i), static_cast<float>(2 * i)}, i % 2);
      r.ts_ms = 1000 + i;
      ASSERT_TRUE((*b)->Append(r));
    }
    ASSERT_TRUE((*b)->Flush().ok());
    EXPECT_EQ((*b)->committed(), 80u);
    EXPECT_EQ((*b)->stored(), 50u);
    EXPECT_EQ((*b)->evicted(), 30u);
  }
  auto b = SampleBuffer::Open(o, 2);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)->stored(), 50u);
  struct stat st {};
  ASSERT_EQ(stat(o.path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "raw readings are private";
  uint64_t corrupt = 9;
  auto all = (*b)->ReadAll(&corrupt);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 50u);
  EXPECT_EQ(corrupt, 0u);
  EXPECT_EQ(all->front().ts_ms, 1030);
  EXPECT_EQ(all->front().values, (std::vector<float>{30, 60}));
  EXPECT_EQ(all->back().label, 1.f);
}

TEST(SampleBuffer, RowsFailingTheirChecksumAreSkippedAndCounted) {
  testing::TempDir dir;
  BufferOptions o;
  o.path = dir.path() + "/samples.db";
  o.commit_interval_ms = 5;
  {
    auto b = SampleBuffer::Open(o, 1);
    ASSERT_TRUE(b.ok());
    for (int i = 0; i < 3; ++i) (*b)->Append(At({static_cast<float>(i)}));
    ASSERT_TRUE((*b)->Flush().ok());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(o.path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE samples SET vals = x'00002041' WHERE seq = 2;", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto b = SampleBuffer::Open(o, 1);
  ASSERT_TRUE(b.ok());
  uint64_t corrupt = 0;
  auto all = (*b)->ReadAll(&corrupt);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 2u);
  EXPECT_EQ(corrupt, 1u);
}

TEST(SampleBuffer, ABadPathIsAClearError) {
  BufferOptions o;
  o.path = "/nonexistent-dir/samples.db";
  auto b = SampleBuffer::Open(o, 1);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("/nonexistent-dir/samples.db"), std::string::npos)
      << b.status().message();
}

}  // namespace
}  // namespace fleet::control
