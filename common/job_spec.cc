#include "common/job_spec.h"

#include <algorithm>
#include <cmath>

#include "common/config.h"
#include "common/file_util.h"
#include "common/model_layout.h"

namespace fleet {

namespace {

Status ParseModel(ConfigMap m, v1::ModelSpec* model) {
  std::string type = "mlp", task = "classification", activation = "relu";
  uint32_t input_dim = 0, output_dim = 0;
  std::vector<uint32_t> hidden;
  float dropout = 0;
  uint32_t channels = 0, kernel_size = 0;
  RETURN_IF_ERROR(m.Get("type", &type));
  RETURN_IF_ERROR(m.Get("task", &task));
  RETURN_IF_ERROR(m.Require("input_dim", &input_dim));
  RETURN_IF_ERROR(m.Get("hidden", &hidden));
  RETURN_IF_ERROR(m.Require("output_dim", &output_dim));
  RETURN_IF_ERROR(m.Get("activation", &activation));
  RETURN_IF_ERROR(m.Get("dropout", &dropout));
  if (type == "cnn1d") {
    RETURN_IF_ERROR(m.Require("channels", &channels));
    kernel_size = 5;
    RETURN_IF_ERROR(m.Get("kernel_size", &kernel_size));
  }
  RETURN_IF_ERROR(m.Finish());
  model->set_channels(channels);
  model->set_kernel_size(kernel_size);
  model->set_type(type);
  model->set_task(task);
  model->set_input_dim(input_dim);
  for (auto h : hidden) model->add_hidden(h);
  model->set_output_dim(output_dim);
  model->set_activation(activation);
  model->set_dropout(dropout);
  return OkStatus();
}

Status ParseTrain(ConfigMap m, v1::TrainSpec* train) {
  uint32_t epochs = 1, batch = 32;
  float lr = 0.01f, momentum = 0.0f, weight_decay = 0.0f;
  std::string optimizer = "sgd";
  RETURN_IF_ERROR(m.Get("local_epochs", &epochs));
  RETURN_IF_ERROR(m.Get("batch_size", &batch));
  RETURN_IF_ERROR(m.Get("learning_rate", &lr));
  RETURN_IF_ERROR(m.Get("optimizer", &optimizer));
  RETURN_IF_ERROR(m.Get("momentum", &momentum));
  RETURN_IF_ERROR(m.Get("weight_decay", &weight_decay));
  RETURN_IF_ERROR(m.Finish());
  train->set_local_epochs(epochs);
  train->set_batch_size(batch);
  train->set_learning_rate(lr);
  train->set_optimizer(optimizer);
  train->set_momentum(momentum);
  train->set_weight_decay(weight_decay);
  return OkStatus();
}

Status ParseSecureAggregation(ConfigMap m, v1::SecureAggregationSpec* sa) {
  const v1::SecureAggregationSpec d = SecureAggregationDefaults();
  bool enabled = !d.disabled();
  float corrupt = d.corrupt_fraction(), dropout = d.dropout_fraction(), clip = d.clip();
  uint32_t neighbours = d.neighbours(), threshold = d.threshold(), value_bits = d.value_bits(),
           max_weight = d.max_weight(), stage_timeout = d.stage_timeout_s();
  RETURN_IF_ERROR(m.Get("enabled", &enabled));
  RETURN_IF_ERROR(m.Get("corrupt_fraction", &corrupt));
  RETURN_IF_ERROR(m.Get("dropout_fraction", &dropout));
  RETURN_IF_ERROR(m.Get("neighbours", &neighbours));
  RETURN_IF_ERROR(m.Get("threshold", &threshold));
  RETURN_IF_ERROR(m.Get("clip", &clip));
  RETURN_IF_ERROR(m.Get("value_bits", &value_bits));
  RETURN_IF_ERROR(m.Get("max_weight", &max_weight));
  RETURN_IF_ERROR(m.Get("stage_timeout_s", &stage_timeout));
  RETURN_IF_ERROR(m.Finish());
  sa->set_disabled(!enabled);
  sa->set_corrupt_fraction(corrupt);
  sa->set_dropout_fraction(dropout);
  sa->set_neighbours(neighbours);
  sa->set_threshold(threshold);
  sa->set_clip(clip);
  sa->set_value_bits(value_bits);
  sa->set_max_weight(max_weight);
  sa->set_stage_timeout_s(stage_timeout);
  return OkStatus();
}

}  // namespace

v1::SecureAggregationSpec SecureAggregationDefaults() {
  v1::SecureAggregationSpec sa;
  sa.set_corrupt_fraction(0.05f);
  sa.set_dropout_fraction(0.05f);
  sa.set_clip(1.0f);
  sa.set_value_bits(16);
  sa.set_max_weight(1000);
  sa.set_stage_timeout_s(30);
  return sa;
}

SecAggThreatModel ThreatModelOf(const v1::SecureAggregationSpec& sa) {
  SecAggThreatModel th;
  th.corrupt_fraction = sa.corrupt_fraction();
  th.dropout_fraction = sa.dropout_fraction();
  th.neighbours = sa.neighbours();
  th.threshold = sa.threshold();
  return th;
}

// Sets `set(value)` only when the key is present: a value the user wrote is kept as written
// (zero included), an absent one stays unset and takes the default (StrategyParamsOf).
template <typename T, typename Setter>
static Status GetPresent(ConfigMap& m, const std::string& key, Setter set) {
  if (!m.Has(key)) return OkStatus();
  T value{};
  RETURN_IF_ERROR(m.Get(key, &value));
  set(value);
  return OkStatus();
}

static Status ParseStrategy(ConfigMap m, v1::StrategySpec* out) {
  std::string name = "fedavg";
  float mu = 0;
  RETURN_IF_ERROR(m.Get("name", &name));
  RETURN_IF_ERROR(GetPresent<float>(m, "server_learning_rate",
                                    [&](float v) { out->set_server_learning_rate(v); }));
  RETURN_IF_ERROR(GetPresent<float>(m, "beta1", [&](float v) { out->set_beta1(v); }));
  RETURN_IF_ERROR(GetPresent<float>(m, "beta2", [&](float v) { out->set_beta2(v); }));
  RETURN_IF_ERROR(GetPresent<float>(m, "tau", [&](float v) { out->set_tau(v); }));
  RETURN_IF_ERROR(m.Get("mu", &mu));
  RETURN_IF_ERROR(
      GetPresent<float>(m, "trim_fraction", [&](float v) { out->set_trim_fraction(v); }));
  RETURN_IF_ERROR(GetPresent<uint32_t>(m, "byzantine", [&](uint32_t v) { out->set_byzantine(v); }));
  RETURN_IF_ERROR(
      GetPresent<uint32_t>(m, "krum_select", [&](uint32_t v) { out->set_krum_select(v); }));
  RETURN_IF_ERROR(m.Finish());
  out->set_name(name);
  out->set_proximal_mu(mu);
  return OkStatus();
}

static Status ParseSelection(ConfigMap m, v1::SelectionSpec* out) {
  float fraction = 0, over = 0, max_load = 0;
  uint32_t max_clients = 0, cooldown = 0, min_memory = 0, min_battery = 0;
  uint64_t min_examples = 0;
  bool power = false, idle = false;
  std::map<std::string, std::string> labels;
  RETURN_IF_ERROR(m.Get("fraction", &fraction));
  RETURN_IF_ERROR(m.Get("max_clients", &max_clients));
  RETURN_IF_ERROR(m.Get("over_selection", &over));
  RETURN_IF_ERROR(m.Get("cooldown_rounds", &cooldown));
  RETURN_IF_ERROR(m.Get("require_power", &power));
  RETURN_IF_ERROR(m.Get("require_idle", &idle));
  RETURN_IF_ERROR(m.Get("max_cpu_load", &max_load));
  RETURN_IF_ERROR(m.Get("min_free_memory_mb", &min_memory));
  RETURN_IF_ERROR(m.Get("min_battery_percent", &min_battery));
  RETURN_IF_ERROR(m.Get("min_examples", &min_examples));
  RETURN_IF_ERROR(m.Get("labels", &labels));
  RETURN_IF_ERROR(m.Finish());
  out->set_fraction(fraction);
  out->set_max_clients(max_clients);
  out->set_over_selection(over);
  out->set_cooldown_rounds(cooldown);
  out->set_require_power(power);
  out->set_require_idle(idle);
  out->set_max_cpu_load(max_load);
  out->set_min_free_memory_mb(min_memory);
  out->set_min_battery_percent(min_battery);
  out->set_min_examples(min_examples);
  out->mutable_labels()->insert(labels.begin(), labels.end());
  return OkStatus();
}

static Status ValidateSelection(const v1::JobSpec& spec) {
  const v1::SelectionSpec& s = spec.selection();
  if (!(s.fraction() >= 0 && s.fraction() <= 1)) {
    return InvalidArgument("selection.fraction must be in [0, 1]");
  }
  if (s.max_clients() > 0 && s.max_clients() < spec.min_clients()) {
    return InvalidArgument("selection.max_clients (" + std::to_string(s.max_clients()) +
                           ") must be >= min_clients (" + std::to_string(spec.min_clients()) + ")");
  }
  if (!(s.over_selection() >= 0 && s.over_selection() <= 10)) {
    return InvalidArgument("selection.over_selection must be in [0, 10] (0.3 selects 30% more)");
  }
  if (s.cooldown_rounds() > 10000) return InvalidArgument("selection.cooldown_rounds is > 10000");
  if (!(s.max_cpu_load() >= 0 && s.max_cpu_load() <= 1000)) {
    return InvalidArgument("selection.max_cpu_load must be >= 0 (load average per core)");
  }
  if (s.min_battery_percent() > 100) {
    return InvalidArgument("selection.min_battery_percent must be <= 100");
  }
  if (s.labels_size() > 32) return InvalidArgument("selection.labels: at most 32");
  for (const auto& [k, v] : s.labels()) {
    if (k.empty() || k.size() > 64 || v.size() > 256) {
      return InvalidArgument("selection.labels: keys of 1-64 characters, values up to 256");
    }
  }
  return OkStatus();
}

StatusOr<v1::JobSpec> ParseJobSpecYaml(const std::string& text, const std::string& source) {
  ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(text, source));
  ASSIGN_OR_RETURN(ConfigMap m, ConfigMap::Create(root, source));
  v1::JobSpec spec;
  std::string name, dataset;
  RETURN_IF_ERROR(m.Require("name", &name));
  RETURN_IF_ERROR(m.Require("dataset", &dataset));
  spec.set_name(name);
  spec.set_dataset(dataset);

  if (!m.Has("model")) return m.MissingKey("model");
  ASSIGN_OR_RETURN(ConfigMap model, m.Child("model"));
  RETURN_IF_ERROR(ParseModel(std::move(model), spec.mutable_model()));
  ASSIGN_OR_RETURN(ConfigMap train, m.Child("train"));
  RETURN_IF_ERROR(ParseTrain(std::move(train), spec.mutable_train()));

  ASSIGN_OR_RETURN(ConfigMap strategy, m.Child("strategy"));
  RETURN_IF_ERROR(ParseStrategy(std::move(strategy), spec.mutable_strategy()));
  ASSIGN_OR_RETURN(ConfigMap secure, m.Child("secure_aggregation"));
  RETURN_IF_ERROR(ParseSecureAggregation(std::move(secure), spec.mutable_secure_aggregation()));
  ASSIGN_OR_RETURN(ConfigMap selection, m.Child("selection"));
  RETURN_IF_ERROR(ParseSelection(std::move(selection), spec.mutable_selection()));

  uint32_t rounds = 0, min_clients = 3, target_clients = 0, round_deadline = 60,
           eval_deadline = 30, retries = 3;
  uint64_t seed = 1;
  RETURN_IF_ERROR(m.Require("rounds", &rounds));
  RETURN_IF_ERROR(m.Get("min_clients", &min_clients));
  RETURN_IF_ERROR(m.Get("target_clients", &target_clients));
  RETURN_IF_ERROR(m.Get("round_deadline_s", &round_deadline));
  RETURN_IF_ERROR(m.Get("eval_deadline_s", &eval_deadline));
  RETURN_IF_ERROR(m.Get("max_round_retries", &retries));
  RETURN_IF_ERROR(m.Get("seed", &seed));
  RETURN_IF_ERROR(m.Finish());
  spec.set_rounds(rounds);
  spec.set_min_clients(min_clients);
  spec.set_target_clients(target_clients == 0 ? min_clients : target_clients);
  spec.set_round_deadline_s(round_deadline);
  spec.set_eval_deadline_s(eval_deadline);
  spec.set_max_round_retries(retries);
  spec.set_seed(seed);
  // FedProx's proximal term is applied by the clients, which see only the TrainSpec.
  spec.mutable_train()->set_proximal_mu(spec.strategy().proximal_mu());

  Status valid = ValidateJobSpec(spec);
  if (!valid.ok()) return InvalidArgument(source + ": " + valid.message());
  return spec;
}

StrategyParams StrategyParamsOf(const v1::StrategySpec& s) {
  StrategyParams p;
  p.name = s.name().empty() ? "fedavg" : s.name();
  // Presence, not value, decides: `beta1: 0` is beta1 = 0, not the default.
  if (s.has_server_learning_rate()) p.server_learning_rate = s.server_learning_rate();
  if (s.has_beta1()) p.beta1 = s.beta1();
  if (s.has_beta2()) p.beta2 = s.beta2();
  if (s.has_tau()) p.tau = s.tau();
  if (s.has_trim_fraction()) p.trim_fraction = s.trim_fraction();
  if (s.has_byzantine()) p.byzantine = s.byzantine();
  if (s.has_krum_select()) p.krum_select = s.krum_select();
  return p;
}

StatusOr<v1::JobSpec> LoadJobSpecFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseJobSpecYaml(text, path);
}

static Status ValidateStrategySpec(const v1::JobSpec& spec) {
  const v1::StrategySpec& st = spec.strategy();
  const StrategyParams p = StrategyParamsOf(st);
  RETURN_IF_ERROR(ValidateStrategy(p));
  if (NeedsIndividualUpdates(p.name) && !spec.secure_aggregation().disabled()) {
    return InvalidArgument(
        "strategy.name '" + p.name + "' needs every update on its own, but secure aggregation "
        "(on unless disabled) shows the coordinator only their sum: set secure_aggregation: "
        "{enabled: false} to use it, or pick fedavg, fedprox, fedadam, fedyogi or fedadagrad");
  }
  // A setting the chosen strategy does not use is refused, not ignored.
  const bool adaptive = p.name == "fedadam" || p.name == "fedyogi" || p.name == "fedadagrad";
  const bool krum = p.name == "krum" || p.name == "multikrum";
  const struct {
    bool set, used;
    const char *key, *users;
  } settings[] = {
      {st.has_beta1(), adaptive, "beta1", "fedadam, fedyogi and fedadagrad"},
      {st.has_beta2(), adaptive, "beta2", "fedadam, fedyogi and fedadagrad"},
      {st.has_tau(), adaptive, "tau", "fedadam, fedyogi and fedadagrad"},
      {st.has_trim_fraction(), p.name == "trimmed_mean", "trim_fraction", "trimmed_mean"},
      {st.has_byzantine(), krum, "byzantine", "krum and multikrum"},
  };
  for (const auto& s : settings) {
    if (s.set && !s.used) {
      return InvalidArgument("strategy." + std::string(s.key) + " is for " + s.users +
                             " only (strategy '" + p.name + "' does not use it)");
    }
  }
  const bool fedprox = p.name == "fedprox";
  if (fedprox != (st.proximal_mu() > 0)) {
    return InvalidArgument(fedprox ? "strategy fedprox needs mu > 0 (the proximal weight)"
                                   : "strategy.mu is for fedprox only");
  }
  if (!(st.proximal_mu() >= 0 && st.proximal_mu() <= 100)) {
    return InvalidArgument("strategy.mu must be in (0, 100]");
  }
  if (spec.train().proximal_mu() != st.proximal_mu()) {
    return InvalidArgument("train.proximal_mu must equal strategy.mu");
  }
  if ((p.name == "krum" || p.name == "multikrum") &&
      spec.min_clients() < 2 * p.byzantine + 3) {
    return InvalidArgument("strategy " + p.name + " with byzantine " +
                           std::to_string(p.byzantine) + " needs min_clients >= " +
                           std::to_string(2 * p.byzantine + 3) + " (2f + 3)");
  }
  if (p.name == "multikrum" && p.krum_select && *p.krum_select > spec.min_clients()) {
    return InvalidArgument("strategy.krum_select must be <= min_clients");
  }
  return OkStatus();
}

Status ValidateJobSpec(const v1::JobSpec& spec) {
  if (spec.name().empty() || spec.name().size() > 128) {
    return InvalidArgument("name must be 1..128 characters");
  }
  if (spec.dataset().empty()) return InvalidArgument("dataset must be set");
  RETURN_IF_ERROR(LayoutFor(spec.model()).status());
  const auto& model = spec.model();
  if (model.task() != "classification" && model.task() != "regression" &&
      model.task() != "autoencoder") {
    return InvalidArgument("model.task '" + model.task() +
                           "' is not supported (classification, regression, autoencoder)");
  }
  if (model.task() == "autoencoder" && model.output_dim() != model.input_dim()) {
    return InvalidArgument("model.output_dim must equal input_dim for an autoencoder");
  }
  if (model.activation() != "relu" && model.activation() != "tanh" &&
      model.activation() != "sigmoid") {
    return InvalidArgument("model.activation '" + model.activation() +
                           "' is not supported (relu, tanh, sigmoid)");
  }
  if (!(model.dropout() >= 0.0f && model.dropout() < 1.0f)) {
    return InvalidArgument("model.dropout must be in [0, 1)");
  }
  if (model.task() == "classification" && model.output_dim() < 2) {
    return InvalidArgument("model.output_dim must be >= 2 classes for classification");
  }
  const auto& train = spec.train();
  if (train.local_epochs() == 0 || train.local_epochs() > 1000) {
    return InvalidArgument("train.local_epochs must be in 1..1000");
  }
  if (train.batch_size() == 0 || train.batch_size() > 65536) {
    return InvalidArgument("train.batch_size must be in 1..65536");
  }
  if (!(train.learning_rate() > 0.0f && train.learning_rate() <= 10.0f)) {
    return InvalidArgument("train.learning_rate must be in (0, 10]");
  }
  if (train.optimizer() != "sgd" && train.optimizer() != "adam") {
    return InvalidArgument("train.optimizer '" + train.optimizer() +
                           "' is not supported (sgd, adam)");
  }
  if (!(train.momentum() >= 0.0f && train.momentum() < 1.0f)) {
    return InvalidArgument("train.momentum must be in [0, 1)");
  }
  if (!(train.weight_decay() >= 0.0f && train.weight_decay() < 1.0f)) {
    return InvalidArgument("train.weight_decay must be in [0, 1)");
  }
  RETURN_IF_ERROR(ValidateStrategySpec(spec));
  RETURN_IF_ERROR(ValidateSelection(spec));
  if (spec.rounds() == 0 || spec.rounds() > 100000) {
    return InvalidArgument("rounds must be in 1..100000");
  }
  if (spec.min_clients() == 0) return InvalidArgument("min_clients must be >= 1");
  if (spec.target_clients() < spec.min_clients()) {
    return InvalidArgument("target_clients (" + std::to_string(spec.target_clients()) +
                           ") must be >= min_clients (" + std::to_string(spec.min_clients()) +
                           ")");
  }
  if (spec.round_deadline_s() == 0 || spec.eval_deadline_s() == 0) {
    return InvalidArgument("round_deadline_s and eval_deadline_s must be >= 1");
  }
  const auto& sa = spec.secure_aggregation();
  if (!sa.disabled()) {
    auto bad = [](const Status& s) {
      return InvalidArgument("secure_aggregation: " + s.message());
    };
    if (spec.min_clients() < 3) {
      return InvalidArgument(
          "secure_aggregation needs min_clients >= 3 (with 2, each client could subtract its own "
          "update from the sum); set min_clients or `secure_aggregation: {enabled: false}`");
    }
    Status th = ValidateThreatModel(ThreatModelOf(sa));
    if (!th.ok()) return bad(th);
    QuantizationSpec q{sa.clip(), sa.value_bits(), sa.max_weight(), 32};
    Status qs = ValidateQuantization(q);
    if (!qs.ok()) return bad(qs);
    if (spec.selection().fraction() > 0 && spec.selection().max_clients() == 0) {
      return bad(InvalidArgument("selection.fraction needs selection.max_clients under secure "
                                 "aggregation: the largest round fixes the modulus"));
    }
    StatusOr<uint32_t> bits = ModulusBitsFor(MaxRoundSize(spec), sa.value_bits(), sa.max_weight());
    if (!bits.ok()) return bad(bits.status());
    if (sa.stage_timeout_s() == 0) return bad(InvalidArgument("stage_timeout_s must be >= 1"));
    // The selected clients must admit parameters at all (refuses e.g. a threshold below what
    // the corrupt fraction demands for this many clients).
    StatusOr<SecAggGraphParams> p = ChooseGraphParams(spec.target_clients(), ThreatModelOf(sa));
    if (!p.ok()) return bad(p.status());
  }
  return OkStatus();
}

uint32_t MaxRoundSize(const v1::JobSpec& spec) {
  const v1::SelectionSpec& s = spec.selection();
  uint64_t base = spec.target_clients();
  if (s.fraction() > 0) base = s.max_clients() > 0 ? s.max_clients() : uint64_t{1} << 31;
  base = std::max<uint64_t>(base, spec.min_clients());
  const double over = std::max(0.0f, s.over_selection());
  return static_cast<uint32_t>(
      std::min<double>(std::ceil(static_cast<double>(base) * (1 + over)), double(1u << 31)));
}

}  // namespace fleet
