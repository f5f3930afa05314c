// Fuzz target: the rules of a device's control block (client/control/rules.h): their YAML
// (conditions, durations, hysteresis, rate limits, and the command objects converted to JSON),
// then the rule engine over a stream of windows whose signals and sample timestamps (which come
// from sensor messages) the fuzzer chooses.
//
// Input: the rules YAML (a `control:`-level mapping with `rules` and `default_action`), a 0x00
// byte, then windows: a flag byte (bit 0: no valid model), a signed timestamp step (4 bytes,
// x1000 ms) and one byte per signal. Timestamps stay in the range sensor messages are held to
// (0 .. year 9999) but may go backwards. Checks beyond "no crash": every command is a JSON object
// naming its rule, event, device and timestamp, on a topic the rules declared.
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "client/control/rules.h"
#include "common/config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fleet;
  using namespace fleet::control;
  const std::string all(reinterpret_cast<const char*>(data), size);
  const size_t split = all.find('\0');
  const std::string yaml = all.substr(0, split);
  const std::string windows = split == std::string::npos ? "" : all.substr(split + 1);

  StatusOr<YAML::Node> root = ParseYaml(yaml, "rules.yaml");
  if (!root.ok()) return 0;
  StatusOr<ConfigMap> m = ConfigMap::Create(*root, "rules.yaml");
  if (!m.ok()) return 0;
  const SignalNames names({"fall", "ok"}, {"t", "h"});
  StatusOr<RulesSpec> spec = ParseRules(*m, names);
  if (!spec.ok()) {
    FUZZ_CHECK(!spec.status().message().empty(), "a refusal without a reason");
    return 0;
  }
  std::set<std::string> topics;
  if (spec->default_action) topics.insert(spec->default_action->topic);
  for (const RuleSpec& r : spec->rules) {
    topics.insert(r.publish.topic);
    if (r.on_release) topics.insert(r.on_release->topic);
    FUZZ_CHECK(r.for_ms >= 0 && r.min_interval_ms >= 0, "negative duration");
    for (const auto* cs : {&r.when, &r.release_when}) {
      for (const Condition& c : *cs) FUZZ_CHECK(c.signal < names.size(), "signal out of range");
    }
  }

  RuleEngine engine(std::move(spec).value(), "dev-1");
  std::vector<Command> out;
  engine.EmitDefault(0, &out);
  fuzz::Input in(reinterpret_cast<const uint8_t*>(windows.data()), windows.size());
  constexpr int64_t kYear9999Ms = 253402300799999;
  int64_t ts = 1'800'000'000'000;
  std::vector<float> signals(names.size());
  while (in.remaining() > 0) {
    const uint8_t flags = in.Byte();
    const int32_t step = static_cast<int32_t>(in.U32());
    ts += int64_t{step} * 1000;
    if (ts < 0) ts = 0;
    if (ts > kYear9999Ms) ts = kYear9999Ms;
    for (float& s : signals) s = static_cast<float>(in.Byte()) / 255.0f;
    engine.Evaluate(signals, (flags & 1) ? "" : "v1", ts, &out);
  }
  for (const Command& c : out) {
    FUZZ_CHECK(topics.count(c.topic) > 0, "command on undeclared topic %s", c.topic.c_str());
    const nlohmann::json j = nlohmann::json::parse(c.payload, nullptr, false);
    FUZZ_CHECK(j.is_object() && j.contains("rule") && j.contains("event") && j.contains("device") &&
                   j.contains("ts_ms"),
               "command payload is not a complete JSON object: %s", c.payload.c_str());
  }
  return 0;
}
