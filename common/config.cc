#include "common/config.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "common/file_util.h"

namespace fleet {
namespace {

bool ParseUnsigned(const std::string& s, uint64_t* out) {
  if (s.empty() || s[0] == '-' || s[0] == '+' || s[0] == ' ') return false;
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno != 0 || end != s.c_str() + s.size()) return false;
  *out = v;
  return true;
}

bool ParseDouble(const std::string& s, double* out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || end != s.c_str() + s.size() || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

}  // namespace

StatusOr<YAML::Node> ParseYaml(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return InvalidArgument(source + ":" + std::to_string(e.mark.line + 1) +
                           ": invalid YAML: " + e.msg);
  }
}

StatusOr<YAML::Node> LoadYamlFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseYaml(text, path);
}

StatusOr<ConfigMap> ConfigMap::Create(const YAML::Node& node, std::string source,
                                      std::string prefix) {
  if (node && !node.IsNull() && !node.IsMap()) {
    std::string where = source + ":" + std::to_string(node.Mark().line + 1);
    return InvalidArgument(where + ": " + (prefix.empty() ? "document" : "key '" + prefix + "'") +
                           ": expected a mapping");
  }
  // yaml-cpp keeps both entries of a repeated key and answers lookups with the first: refuse it
  // rather than silently ignore what the later line says.
  if (node && node.IsMap()) {
    std::set<std::string> seen;
    for (const auto& kv : node) {
      if (!kv.first.IsScalar()) continue;
      const std::string key = kv.first.Scalar();
      if (!seen.insert(key).second) {
        const std::string full = prefix.empty() ? key : prefix + "." + key;
        return InvalidArgument(source + ":" + std::to_string(kv.first.Mark().line + 1) +
                               ": key '" + full + "' appears more than once");
      }
    }
  }
  return ConfigMap(node, std::move(source), std::move(prefix));
}

bool ConfigMap::Has(const std::string& key) const {
  return node_ && node_.IsMap() && node_[key] && !node_[key].IsNull();
}

std::string ConfigMap::Where(const std::string& key) const {
  std::string full = prefix_.empty() ? key : prefix_ + "." + key;
  int line = -1;
  if (node_ && node_.IsMap() && node_[key]) line = node_[key].Mark().line;
  if (line < 0 && node_) line = node_.Mark().line;
  std::string loc = source_;
  if (line >= 0) loc += ":" + std::to_string(line + 1);
  return loc + ": key '" + full + "'";
}

Status ConfigMap::TypeError(const std::string& key, const std::string& expected) const {
  std::string got;
  const YAML::Node v = node_[key];
  if (v.IsScalar()) got = ", got '" + v.Scalar() + "'";
  else if (v.IsSequence()) got = ", got a list";
  else if (v.IsMap()) got = ", got a mapping";
  return InvalidArgument(Where(key) + ": expected " + expected + got);
}

Status ConfigMap::MissingKey(const std::string& key) const {
  std::string full = prefix_.empty() ? key : prefix_ + "." + key;
  return InvalidArgument(source_ + ": missing required key '" + full + "'");
}

StatusOr<std::string> ConfigMap::Scalar(const std::string& key, const std::string& expected) {
  used_.insert(key);
  const YAML::Node v = node_[key];
  if (!v.IsScalar()) return TypeError(key, expected);
  if (!IsValidUtf8(v.Scalar())) return InvalidArgument(Where(key) + ": not valid UTF-8");
  return v.Scalar();
}

Status ConfigMap::Get(const std::string& key, std::string* out) {
  if (!Has(key)) { used_.insert(key); return OkStatus(); }
  ASSIGN_OR_RETURN(*out, Scalar(key, "string"));
  return OkStatus();
}

Status ConfigMap::Get(const std::string& key, bool* out) {
  if (!Has(key)) { used_.insert(key); return OkStatus(); }
  ASSIGN_OR_RETURN(std::string s, Scalar(key, "boolean (true/false)"));
  if (s == "true") *out = true;
  else if (s == "false") *out = false;
  else return TypeError(key, "boolean (true/false)");
  return OkStatus();
}

Status ConfigMap::Get(const std::string& key, uint64_t* out) {
  if (!Has(key)) { used_.insert(key); return OkStatus(); }
  ASSIGN_OR_RETURN(std::string s, Scalar(key, "unsigned integer"));
  if (!ParseUnsigned(s, out)) return TypeError(key, "unsigned integer");
  return OkStatus();
}

Status ConfigMap::Get(const std::string& key, uint32_t* out) {
  if (!Has(key)) { used_.insert(key); return OkStatus(); }
  uint64_t v = 0;
  RETURN_IF_ERROR(Get(key, &v));
  if (v > std::numeric_limits<uint32_t>::max()) return TypeError(key, "unsigned 32-bit integer");
  *out = static_cast<uint32_t>(v);
  return OkStatus();
}

Status ConfigMap::Get(const std::string& key, int64_t* out) {
  if (!Has(key)) { used_.insert(key); return OkStatus(); }
  ASSIGN_OR_RETURN(std::string s, Scalar(key, "integer"));
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || errno != 0 || end != s.c_str() + s.size()) return TypeError(key, "integer");
  *out = v;
  return OkStatus();
}

Status ConfigMap::Get(const std::string& key, double* out) {
  if (!Has(key)) { used_.insert(key); return OkStatus(); }
  ASSIGN_OR_RETURN(std::string s, Scalar(key, "number"));
  if (!ParseDouble(s, out)) return TypeError(key, "finite number");
  return OkStatus();
}

Status ConfigMap::Get(const std::string& key, float* out) {
  if (!Has(key)) { used_.insert(key); return OkStatus(); }
  double v = 0;
  RETURN_IF_ERROR(Get(key, &v));
  // Converting a double beyond float's range is undefined behaviour, not infinity.
  if (std::fabs(v) > std::numeric_limits<float>::max()) {
    return TypeError(key, "number within the float range (|x| <= 3.4e38)");
  }
  *out = static_cast<float>(v);
  return OkStatus();
}

Status ConfigMap::Get(const std::string& key, std::vector<uint32_t>* out) {
  used_.insert(key);
  if (!Has(key)) return OkStatus();
  const YAML::Node v = node_[key];
  if (!v.IsSequence()) return TypeError(key, "list of unsigned integers");
  std::vector<uint32_t> result;
  for (const auto& item : v) {
    uint64_t x = 0;
    if (!item.IsScalar() || !ParseUnsigned(item.Scalar(), &x) || x > 0xffffffffULL) {
      return TypeError(key, "list of unsigned integers");
    }
    result.push_back(static_cast<uint32_t>(x));
  }
  *out = std::move(result);
  return OkStatus();
}

Status ConfigMap::Get(const std::string& key, std::vector<double>* out) {
  used_.insert(key);
  if (!Has(key)) return OkStatus();
  const YAML::Node v = node_[key];
  if (!v.IsSequence()) return TypeError(key, "list of numbers");
  std::vector<double> result;
  for (const auto& item : v) {
    double x = 0;
    if (!item.IsScalar() || !ParseDouble(item.Scalar(), &x)) return TypeError(key, "list of finite numbers");
    result.push_back(x);
  }
  *out = std::move(result);
  return OkStatus();
}

Status ConfigMap::Get(const std::string& key, std::vector<std::string>* out) {
  used_.insert(key);
  if (!Has(key)) return OkStatus();
  const YAML::Node v = node_[key];
  if (!v.IsSequence()) return TypeError(key, "list of strings");
  std::vector<std::string> result;
  for (const auto& item : v) {
    if (!item.IsScalar()) return TypeError(key, "list of strings");
    if (!IsValidUtf8(item.Scalar())) return InvalidArgument(Where(key) + ": not valid UTF-8");
    result.push_back(item.Scalar());
  }
  *out = std::move(result);
  return OkStatus();
}

Status ConfigMap::Get(const std::string& key, std::map<std::string, std::string>* out) {
  used_.insert(key);
  if (!Has(key)) return OkStatus();
  const YAML::Node v = node_[key];
  if (!v.IsMap()) return TypeError(key, "mapping of strings (key: value)");
  std::map<std::string, std::string> result;
  for (const auto& kv : v) {
    if (!kv.first.IsScalar() || !kv.second.IsScalar()) {
      return TypeError(key, "mapping of strings (key: value)");
    }
    if (!IsValidUtf8(kv.first.Scalar()) || !IsValidUtf8(kv.second.Scalar())) {
      return InvalidArgument(Where(key) + ": not valid UTF-8");
    }
    result[kv.first.Scalar()] = kv.second.Scalar();
  }
  *out = std::move(result);
  return OkStatus();
}

StatusOr<ConfigMap> ConfigMap::Child(const std::string& key) {
  used_.insert(key);
  std::string full = prefix_.empty() ? key : prefix_ + "." + key;
  if (!Has(key)) return ConfigMap(YAML::Node(), source_, full);
  return Create(node_[key], source_, full);
}

StatusOr<std::vector<ConfigMap>> ConfigMap::ChildList(const std::string& key) {
  used_.insert(key);
  std::vector<ConfigMap> result;
  if (!Has(key)) return result;
  const YAML::Node v = node_[key];
  if (!v.IsSequence()) return TypeError(key, "list of mappings");
  std::string full = prefix_.empty() ? key : prefix_ + "." + key;
  for (size_t i = 0; i < v.size(); ++i) {
    ASSIGN_OR_RETURN(ConfigMap item,
                     Create(v[i], source_, full + "[" + std::to_string(i) + "]"));
    result.push_back(std::move(item));
  }
  return result;
}

YAML::Node ConfigMap::Raw(const std::string& key) {
  used_.insert(key);
  return Has(key) ? node_[key] : YAML::Node();
}

Status ConfigMap::Finish() const {
  if (!node_ || !node_.IsMap()) return OkStatus();
  std::string known;
  for (const auto& k : used_) known += (known.empty() ? "" : ", ") + k;
  for (const auto& kv : node_) {
    std::string key = kv.first.Scalar();
    if (used_.count(key) == 0) {
      std::string full = prefix_.empty() ? key : prefix_ + "." + key;
      return InvalidArgument(source_ + ":" + std::to_string(kv.first.Mark().line + 1) +
                             ": unknown key '" + full + "' (known keys here: " + known + ")");
    }
  }
  return OkStatus();
}

}  // namespace fleet

namespace fleet {

StatusOr<int64_t> ParseDurationSeconds(const std::string& text) {
  const std::string bad = "duration '" + text + "' is not a number followed by s, m, h or d";
  if (text.empty() || text.size() > 20) return InvalidArgument(bad);
  size_t digits = 0;
  while (digits < text.size() && isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0 || digits > 12 || text.size() > digits + 1) return InvalidArgument(bad);
  int64_t n = std::stoll(text.substr(0, digits));
  int64_t unit = 1;
  if (digits < text.size()) {
    switch (text[digits]) {
      case 's': unit = 1; break;
      case 'm': unit = 60; break;
      case 'h': unit = 3600; break;
      case 'd': unit = 86400; break;
      default: return InvalidArgument(bad);
    }
  }
  if (n <= 0) return InvalidArgument("duration '" + text + "' must be positive");
  if (n > kMaxDurationSeconds / unit) {
    return InvalidArgument("duration '" + text + "' is longer than 100 years");
  }
  return n * unit;
}

Status ValidateDeviceId(const std::string& id) {
  if (id.empty() || id.size() > 128) return InvalidArgument("device_id must be 1..128 characters");
  for (char c : id) {
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) {
      return InvalidArgument("device_id may contain only letters, digits, '-', '_' and '.'");
    }
  }
  return OkStatus();
}

}  // namespace fleet
