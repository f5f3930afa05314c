#include "client/control/rules.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <sstream>

namespace fleet::control {

SignalNames::SignalNames(const std::vector<std::string>& outputs,
                         const std::vector<std::string>& fields) {
  names_ = outputs;
  outputs_ = outputs.size();
  names_.push_back("class");
  names_.push_back("confidence");
  names_.push_back("anomaly");
  model_signals_ = names_.size();
  for (const std::string& f : fields) names_.push_back("raw." + f);
}

std::optional<size_t> SignalNames::Find(const std::string& name) const {
  for (size_t i = 0; i < names_.size(); ++i) {
    if (names_[i] == name) return i;
  }
  return std::nullopt;
}

namespace {

// A command object is small: at most this many YAML nodes (an alias counts each time it is used,
// so a few nested anchors cannot expand into billions) and this deep.
constexpr size_t kMaxCommandNodes = 1024;
constexpr int kMaxCommandDepth = 16;

// YAML scalars become JSON numbers or booleans when they read as such, else strings (which must
// be UTF-8, as JSON's are). Mapping keys must be strings.
Status ToJson(const YAML::Node& n, int depth, size_t* nodes, nlohmann::json* out) {
  if (++*nodes > kMaxCommandNodes || depth > kMaxCommandDepth) {
    return InvalidArgument("is larger than " + std::to_string(kMaxCommandNodes) +
                           " values or nested deeper than " + std::to_string(kMaxCommandDepth));
  }
  if (n.IsMap()) {
    *out = nlohmann::json::object();
    for (const auto& kv : n) {
      if (!kv.first.IsScalar()) return InvalidArgument("has a key that is not a string");
      const std::string& key = kv.first.Scalar();
      if (!IsValidUtf8(key)) return InvalidArgument("has a key that is not valid UTF-8");
      RETURN_IF_ERROR(ToJson(kv.second, depth + 1, nodes, &(*out)[key]));
    }
    return OkStatus();
  }
  if (n.IsSequence()) {
    *out = nlohmann::json::array();
    for (const auto& e : n) {
      nlohmann::json item;
      RETURN_IF_ERROR(ToJson(e, depth + 1, nodes, &item));
      out->push_back(std::move(item));
    }
    return OkStatus();
  }
  if (n.IsNull()) {
    *out = nullptr;
    return OkStatus();
  }
  const std::string s = n.Scalar();
  if (!IsValidUtf8(s)) return InvalidArgument("has a string that is not valid UTF-8");
  if (n.Tag() != "!" && !s.empty()) {  // unquoted
    if (s == "true" || s == "false") {
      *out = s == "true";
      return OkStatus();
    }
    char* end = nullptr;
    errno = 0;
    long long i = std::strtoll(s.c_str(), &end, 10);
    if (*end == '\0' && errno == 0) {
      *out = i;
      return OkStatus();
    }
    // Too large for an int64 (ERANGE), or not an integer: a finite double, if it reads as one.
    double d = std::strtod(s.c_str(), &end);
    if (*end == '\0' && std::isfinite(d)) {
      *out = d;
      return OkStatus();
    }
  }
  *out = s;
  return OkStatus();
}

StatusOr<std::vector<Condition>> ParseConditions(const std::string& text, const std::string& where,
                                                 const SignalNames& names, bool* uses_model) {
  std::vector<Condition> out;
  std::istringstream in(text);
  std::string signal, op, value, conj;
  while (in >> signal) {
    if (!(in >> op >> value)) {
      return InvalidArgument(where + ": '" + text + "' is not '<signal> <op> <number> [and ...]'");
    }
    Condition c;
    std::optional<size_t> idx = names.Find(signal);
    if (!idx) {
      return InvalidArgument(where + ": unknown signal '" + signal +
                             "' (model outputs named in `outputs`, class, confidence, anomaly, raw.<field>)");
    }
    c.signal = *idx;
    *uses_model = *uses_model || names.IsModelSignal(*idx);
    if (op == ">") c.op = Condition::kGt;
    else if (op == ">=") c.op = Condition::kGe;
    else if (op == "<") c.op = Condition::kLt;
    else if (op == "<=") c.op = Condition::kLe;
    else if (op == "==") c.op = Condition::kEq;
    else if (op == "!=") c.op = Condition::kNe;
    else return InvalidArgument(where + ": operator '" + op + "' is not one of > >= < <= == !=");
    char* end = nullptr;
    c.value = std::strtod(value.c_str(), &end);
    if (*end != '\0') return InvalidArgument(where + ": '" + value + "' is not a number");
    out.push_back(c);
    if (!(in >> conj)) break;
    if (conj != "and") return InvalidArgument(where + ": expected 'and', got '" + conj + "'");
  }
  if (out.empty()) return InvalidArgument(where + " is empty");
  return out;
}

StatusOr<Action> ParseAction(ConfigMap m) {
  Action a;
  RETURN_IF_ERROR(m.Require("topic", &a.topic));
  if (a.topic.empty() || a.topic.find_first_of("+#") != std::string::npos) {
    return InvalidArgument(m.Where("topic") + " must be a non-empty topic without wildcards");
  }
  if (!m.Has("command")) return m.MissingKey("command");
  YAML::Node cmd = m.Raw("command");
  if (!cmd.IsMap()) return m.TypeError("command", "a mapping");
  nlohmann::json command;
  size_t nodes = 0;
  if (Status s = ToJson(cmd, 0, &nodes, &command); !s.ok()) {
    return InvalidArgument(m.Where("command") + " " + s.message());
  }
  a.command_json = command.dump();
  RETURN_IF_ERROR(m.Finish());
  return a;
}

bool Holds(const std::vector<Condition>& cs, const std::vector<float>& s) {
  for (const Condition& c : cs) {
    double v = s[c.signal];
    bool ok = false;
    switch (c.op) {
      case Condition::kGt: ok = v > c.value; break;
      case Condition::kGe: ok = v >= c.value; break;
      case Condition::kLt: ok = v < c.value; break;
      case Condition::kLe: ok = v <= c.value; break;
      case Condition::kEq: ok = v == c.value; break;
      case Condition::kNe: ok = v != c.value; break;
    }
    if (!ok) return false;
  }
  return true;
}

}  // namespace

StatusOr<RulesSpec> ParseRules(ConfigMap& control, const SignalNames& names) {
  RulesSpec spec;
  if (control.Has("default_action")) {
    ASSIGN_OR_RETURN(ConfigMap d, control.Child("default_action"));
    ASSIGN_OR_RETURN(Action a, ParseAction(std::move(d)));
    spec.default_action = std::move(a);
  }
  if (!control.Has("rules")) return spec;
  ASSIGN_OR_RETURN(std::vector<ConfigMap> rules, control.ChildList("rules"));
  for (ConfigMap& m : rules) {
    RuleSpec r;
    RETURN_IF_ERROR(m.Require("name", &r.name));
    for (const RuleSpec& other : spec.rules) {
      if (other.name == r.name) return InvalidArgument(m.Where("name") + ": rule '" + r.name + "' is declared twice");
    }
    std::string when, release;
    RETURN_IF_ERROR(m.Require("when", &when));
    ASSIGN_OR_RETURN(r.when, ParseConditions(when, m.Where("when"), names, &r.uses_model));
    RETURN_IF_ERROR(m.Get("release_when", &release));
    if (!release.empty()) {
      ASSIGN_OR_RETURN(r.release_when,
                       ParseConditions(release, m.Where("release_when"), names, &r.uses_model));
    }
    RETURN_IF_ERROR(m.Get("for_windows", &r.for_windows));
    if (r.for_windows == 0) return InvalidArgument(m.Where("for_windows") + " must be >= 1");
    for (auto [key, out] : {std::pair<const char*, int64_t*>{"for", &r.for_ms},
                            {"min_interval", &r.min_interval_ms}}) {
      std::string text;
      RETURN_IF_ERROR(m.Get(key, &text));
      if (text.empty()) continue;
      StatusOr<int64_t> s = ParseDurationSeconds(text);
      if (!s.ok()) return InvalidArgument(m.Where(key) + ": " + s.status().message());
      *out = *s * 1000;
    }
    ASSIGN_OR_RETURN(ConfigMap pub, m.Child("publish"));
    if (!m.Has("publish")) return m.MissingKey("publish");
    ASSIGN_OR_RETURN(r.publish, ParseAction(std::move(pub)));
    if (m.Has("on_release")) {
      ASSIGN_OR_RETURN(ConfigMap rel, m.Child("on_release"));
      ASSIGN_OR_RETURN(Action a, ParseAction(std::move(rel)));
      r.on_release = std::move(a);
    }
    RETURN_IF_ERROR(m.Finish());
    spec.rules.push_back(std::move(r));
  }
  return spec;
}

RuleEngine::RuleEngine(RulesSpec spec, std::string device_id)
    : spec_(std::move(spec)), device_id_(std::move(device_id)), state_(spec_.rules.size()) {}

Command RuleEngine::Make(const Action& a, const std::string& rule, const char* event,
                         const std::string& model_version, int64_t ts_ms) const {
  nlohmann::json j = nlohmann::json::parse(a.command_json);
  j["rule"] = rule;
  j["event"] = event;
  j["device"] = device_id_;
  j["model_version"] = model_version;
  j["ts_ms"] = ts_ms;
  return Command{a.topic, j.dump()};
}

void RuleEngine::EmitDefault(int64_t ts_ms, std::vector<Command>* out) {
  if (default_sent_ || !spec_.default_action) return;
  out->push_back(Make(*spec_.default_action, "default", "no_model", "", ts_ms));
  default_sent_ = true;
}

void RuleEngine::Evaluate(const std::vector<float>& signals, const std::string& model_version,
                          int64_t ts_ms, std::vector<Command>* out) {
  const bool model_ok = !model_version.empty();
  if (!model_ok && !default_sent_ && spec_.default_action) {
    out->push_back(Make(*spec_.default_action, "default", "no_model", "", ts_ms));
  }
  default_sent_ = !model_ok;
  for (size_t i = 0; i < spec_.rules.size(); ++i) {
    const RuleSpec& r = spec_.rules[i];
    State& st = state_[i];
    if (r.uses_model && !model_ok) {
      st = State{false, 0, 0, st.last_sent_ms};  // start over once a model is back
      continue;
    }
    if (!st.active) {
      if (!Holds(r.when, signals)) {
        st.streak = 0;
        continue;
      }
      if (st.streak++ == 0) st.since_ms = ts_ms;
      if (st.streak < r.for_windows || ts_ms - st.since_ms < r.for_ms) continue;
      st.active = true;
      if (st.last_sent_ms != INT64_MIN && ts_ms - st.last_sent_ms < r.min_interval_ms) {
        ++rate_limited_;
        continue;
      }
      st.last_sent_ms = ts_ms;
      out->push_back(Make(r.publish, r.name, "fire", model_version, ts_ms));
    } else {
      bool release = r.release_when.empty() ? !Holds(r.when, signals)
                                            : Holds(r.release_when, signals);
      if (!release) continue;
      st.active = false;
      st.streak = 0;
      if (r.on_release) {
        out->push_back(Make(*r.on_release, r.name, "release", model_version, ts_ms));
      }
    }
  }
}

}  // namespace fleet::control
