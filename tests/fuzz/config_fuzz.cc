// Fuzz target: the YAML config parsers: the device's client config (ParseClientConfig, with its
// datasets, eligibility and `control:` blocks: sensor schema, preprocessing, rules, MQTT), the
// coordinator's config (ParseCoordinatorConfig), and the strict reader they share
// (common/config.h ConfigMap: every getter over every key of a document).
//
// Input: byte 0 mod 3 picks the parser, the rest is the YAML text. Checks beyond "no crash": an
// accepted client config builds its preprocessor and rule engine, with rule durations and sizes
// within their documented bounds.
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "client/client_config.h"
#include "common/config.h"
#include "coordinator/settings.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void CheckClient(const fleet::ClientConfig& c) {
  using namespace fleet;
  FUZZ_CHECK(ValidateDeviceId(c.device_id).ok(), "accepted an invalid device id");
  for (const DatasetSpec& d : c.datasets) {
    FUZZ_CHECK(!d.files.empty(), "dataset without files");
    FUZZ_CHECK(d.normalize_mean.size() == d.normalize_std.size(), "normalize sizes differ");
  }
  if (!c.control) return;
  const control::ControlConfig& cc = *c.control;
  control::Preprocessor pre(cc.preprocess, cc.schema.width());
  FUZZ_CHECK(pre.output_dim() > 0, "a preprocessor without outputs");
  for (const control::RuleSpec& r : cc.rules.rules) {
    FUZZ_CHECK(r.for_windows >= 1 && r.for_ms >= 0 && r.min_interval_ms >= 0,
               "rule %s has a negative duration", r.name.c_str());
    // Durations are capped (ParseDurationSeconds): sample-time arithmetic cannot overflow.
    FUZZ_CHECK(r.for_ms <= int64_t{100} * 366 * 86400 * 1000 &&
                   r.min_interval_ms <= int64_t{100} * 366 * 86400 * 1000,
               "rule %s has a duration beyond 100 years", r.name.c_str());
  }
  control::RuleEngine engine(cc.rules, c.device_id);
  std::vector<control::Command> out;
  engine.EmitDefault(0, &out);
}

// Reads every key of a mapping with a getter chosen by the key's length, nested mappings and
// lists of mappings recursively, then Finish(): whatever the document, getters give a value or
// an error naming the key, never an exception.
void Explore(const YAML::Node& node, fleet::ConfigMap m, int depth) {
  using namespace fleet;
  if (!node.IsMap()) {
    (void)m.Finish();
    return;
  }
  for (const auto& kv : node) {
    if (!kv.first.IsScalar()) continue;
    const std::string key = kv.first.Scalar();
    (void)m.Has(key);
    (void)m.Where(key);
    std::string s;
    bool b;
    uint32_t u32;
    uint64_t u64;
    int64_t i64;
    double d;
    float f;
    std::vector<uint32_t> vu;
    std::vector<double> vd;
    std::vector<std::string> vs;
    std::map<std::string, std::string> ms;
    switch (key.size() % 14) {
      case 0:
        (void)m.Get(key, &s);
        break;
      case 1:
        (void)m.Get(key, &b);
        break;
      case 2:
        (void)m.Get(key, &u32);
        break;
      case 3:
        (void)m.Get(key, &u64);
        break;
      case 4:
        (void)m.Get(key, &i64);
        break;
      case 5:
        (void)m.Get(key, &d);
        break;
      case 6:
        if (m.Get(key, &f).ok()) FUZZ_CHECK(std::isfinite(f), "non-finite float accepted");
        break;
      case 7:
        (void)m.Get(key, &vu);
        break;
      case 8:
        (void)m.Get(key, &vd);
        break;
      case 9:
        (void)m.Get(key, &vs);
        break;
      case 10:
        (void)m.Get(key, &ms);
        break;
      case 11:
        if (m.Get(key, &s).ok() && !s.empty()) (void)ParseDurationSeconds(s);
        break;
      case 12:
        if (depth < 8) {
          StatusOr<ConfigMap> child = m.Child(key);
          if (child.ok()) Explore(kv.second, std::move(child).value(), depth + 1);
        }
        break;
      default:
        if (depth < 8) {
          StatusOr<std::vector<ConfigMap>> list = m.ChildList(key);
          if (list.ok()) {
            for (size_t i = 0; i < list->size(); ++i) {
              Explore(kv.second[i], std::move((*list)[i]), depth + 1);
            }
          }
        }
        break;
    }
  }
  (void)m.Finish();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fleet;
  fuzz::Input in(data, size);
  const uint8_t which = in.Byte() % 3;
  const std::string text(in.Rest());
  switch (which) {
    case 0: {
      StatusOr<ClientConfig> c = ParseClientConfig(text, "/etc/fleetfl/client.yaml");
      if (c.ok()) CheckClient(*c);
      break;
    }
    case 1: {
      CoordinatorSettings s;
      Status st = ParseCoordinatorConfig(text, "coordinator.yaml", &s);
      if (st.ok() && !s.device_cert_ttl.empty()) {
        StatusOr<int64_t> ttl = ParseDurationSeconds(s.device_cert_ttl);
        if (ttl.ok()) {
          FUZZ_CHECK(*ttl > 0 && *ttl <= int64_t{100} * 366 * 86400,
                     "certificate lifetime %lld s accepted", static_cast<long long>(*ttl));
        }
      }
      break;
    }
    default: {
      StatusOr<YAML::Node> root = ParseYaml(text, "doc.yaml");
      if (!root.ok()) break;
      StatusOr<ConfigMap> m = ConfigMap::Create(*root, "doc.yaml");
      if (m.ok()) Explore(*root, std::move(m).value(), 0);
      break;
    }
  }
  return 0;
}
