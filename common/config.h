// Strict YAML reading shared by every config and job-spec loader: unknown keys, missing required
// keys and wrong types are errors that name the file, line, dotted key and expected type.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/utf8.h"

namespace fleet {

// Parses YAML text; `source` names it in errors (usually the file path).
StatusOr<YAML::Node> ParseYaml(const std::string& text, const std::string& source);
StatusOr<YAML::Node> LoadYamlFile(const std::string& path);

// A YAML mapping read key by key. Call Finish() last: it rejects keys nobody asked for.
class ConfigMap {
 public:
  // `node` must be a mapping (or null, which reads as empty).
  static StatusOr<ConfigMap> Create(const YAML::Node& node, std::string source,
                                    std::string prefix = "");

  bool Has(const std::string& key) const;

  // Optional getters leave *out untouched when the key is absent.
  Status Get(const std::string& key, std::string* out);
  Status Get(const std::string& key, bool* out);
  Status Get(const std::string& key, uint32_t* out);
  Status Get(const std::string& key, uint64_t* out);
  Status Get(const std::string& key, int64_t* out);
  Status Get(const std::string& key, double* out);
  Status Get(const std::string& key, float* out);
  Status Get(const std::string& key, std::vector<uint32_t>* out);
  Status Get(const std::string& key, std::vector<double>* out);
  Status Get(const std::string& key, std::vector<std::string>* out);
  Status Get(const std::string& key, std::map<std::string, std::string>* out);

  template <typename T>
  Status Require(const std::string& key, T* out) {
    if (!Has(key)) return MissingKey(key);
    return Get(key, out);
  }

  // A nested mapping; absent keys give an empty map.
  StatusOr<ConfigMap> Child(const std::string& key);
  // A nested sequence of mappings.
  StatusOr<std::vector<ConfigMap>> ChildList(const std::string& key);
  // The raw node, for values of several possible shapes; marks the key as known.
  YAML::Node Raw(const std::string& key);

  Status Finish() const;

  // "file:line: key 'a.b'" for use in caller-built messages.
  std::string Where(const std::string& key) const;
  Status TypeError(const std::string& key, const std::string& expected) const;
  Status MissingKey(const std::string& key) const;
  const std::string& source() const { return source_; }

 private:
  ConfigMap(YAML::Node node, std::string source, std::string prefix)
      : node_(std::move(node)), source_(std::move(source)), prefix_(std::move(prefix)) {}
  StatusOr<std::string> Scalar(const std::string& key, const std::string& expected);

  YAML::Node node_;
  std::string source_;
  std::string prefix_;
  std::set<std::string> used_;
};

}  // namespace fleet

namespace fleet {

// "90s", "15m", "24h", "7d" (or plain seconds) -> seconds, at most kMaxDurationSeconds;
// InvalidArgument naming the input.
StatusOr<int64_t> ParseDurationSeconds(const std::string& text);

// Device ids: 1..128 of [A-Za-z0-9._-].
Status ValidateDeviceId(const std::string& id);

// The longest duration ParseDurationSeconds accepts: 100 years (36525 days). Anything a config
// means is far shorter, and milliseconds of it still fit an int64 with room to add timestamps.
constexpr int64_t kMaxDurationSeconds = int64_t{36525} * 86400;

}  // namespace fleet
