#include "aggregation/fedavg.h"

#include <algorithm>
#include <random>
#include <set>

#include "aggregation/robust.h"

namespace fleet {

std::vector<std::string> Strategy::SelectClients(const std::vector<std::string>& candidates,
                                                 uint32_t round, size_t target, uint64_t seed) {
  std::vector<std::string> pool = candidates;
  std::sort(pool.begin(), pool.end());  // independent of registry iteration order
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + round);
  std::shuffle(pool.begin(), pool.end(), rng);
  if (pool.size() > target) pool.resize(target);
  return pool;
}

Status CheckCoverage(const std::vector<ParamSpan>& update, size_t size) {
  size_t covered = 0;
  for (const ParamSpan& s : update) {
    if (s.offset + s.size > size) {
      return InvalidArgument("update span [" + std::to_string(s.offset) + ", " +
                             std::to_string(s.offset + s.size) + ") exceeds model size " +
                             std::to_string(size));
    }
    covered += s.size;
  }
  if (covered != size) {
    return InvalidArgument("update covers " + std::to_string(covered) + " of " +
                           std::to_string(size) + " parameters");
  }
  return OkStatus();
}

EvalMetrics Strategy::AggregateEvaluate(const std::vector<EvalMetrics>& results) {
  EvalMetrics out;
  for (const auto& r : results) {
    out.num_examples += r.num_examples;
    out.loss += r.loss * static_cast<double>(r.num_examples);
    out.accuracy += r.accuracy * static_cast<double>(r.num_examples);
  }
  if (out.num_examples > 0) {
    out.loss /= static_cast<double>(out.num_examples);
    out.accuracy /= static_cast<double>(out.num_examples);
  }
  return out;
}

void FedAvg::BeginRound(const std::vector<float>& global) {
  sum_.assign(global.size(), 0.0);
  total_weight_ = 0;
  accepted_ = 0;
  weighted_ = FitMetrics{};
}

Status FedAvg::AccumulateFit(const std::vector<ParamSpan>& update, const FitMetrics& metrics) {
  if (metrics.num_examples == 0) return InvalidArgument("update reports 0 training examples");
  RETURN_IF_ERROR(CheckCoverage(update, sum_.size()));
  const double w = static_cast<double>(metrics.num_examples);
  for (const ParamSpan& s : update) {
    double* acc = sum_.data() + s.offset;
    for (size_t i = 0; i < s.size; ++i) acc[i] += w * static_cast<double>(s.data[i]);
  }
  total_weight_ += w;
  weighted_.num_examples += metrics.num_examples;
  weighted_.train_loss += w * metrics.train_loss;
  weighted_.val_loss += w * metrics.val_loss;
  weighted_.val_accuracy += w * metrics.val_accuracy;
  ++accepted_;
  return OkStatus();
}

StatusOr<std::vector<float>> FedAvg::FinishFit(FitMetrics* summary) {
  if (accepted_ == 0) return FailedPrecondition("no updates to aggregate");
  std::vector<float> out(sum_.size());
  const double inv = 1.0 / total_weight_;
  for (size_t i = 0; i < sum_.size(); ++i) out[i] = static_cast<float>(sum_[i] * inv);
  if (summary != nullptr) {
    summary->num_examples = weighted_.num_examples;
    summary->train_loss = weighted_.train_loss * inv;
    summary->val_loss = weighted_.val_loss * inv;
    summary->val_accuracy = weighted_.val_accuracy * inv;
  }
  return out;
}

const char* StrategyNames() {
  return "fedavg, fedprox, fedadam, fedyogi, fedadagrad, median, trimmed_mean, krum, multikrum";
}

bool NeedsIndividualUpdates(const std::string& name) {
  return name == "median" || name == "trimmed_mean" || name == "krum" || name == "multikrum";
}

Status ValidateStrategy(const StrategyParams& p) {
  static const std::set<std::string> kNames{"fedavg", "fedprox", "fedadam", "fedyogi",
                                            "fedadagrad", "median", "trimmed_mean", "krum",
                                            "multikrum"};
  if (kNames.count(p.name) == 0) {
    return InvalidArgument("unknown strategy '" + p.name + "' (supported: " + StrategyNames() +
                           ")");
  }
  if (p.server_learning_rate && !(*p.server_learning_rate > 0 && *p.server_learning_rate <= 10)) {
    return InvalidArgument(
        "strategy.server_learning_rate must be in (0, 10] (leave it out for "
        "the default)");
  }
  if (!(p.beta1 >= 0 && p.beta1 < 1) || !(p.beta2 >= 0 && p.beta2 < 1)) {
    return InvalidArgument("strategy.beta1 and beta2 must be in [0, 1)");
  }
  if (!(p.tau > 0 && p.tau <= 1)) return InvalidArgument("strategy.tau must be in (0, 1]");
  if (!(p.trim_fraction >= 0 && p.trim_fraction < 0.5)) {
    return InvalidArgument("strategy.trim_fraction must be in [0, 0.5)");
  }
  if (p.byzantine > 1000) return InvalidArgument("strategy.byzantine must be <= 1000");
  if (p.krum_select && *p.krum_select == 0) {
    return InvalidArgument("strategy.krum_select must be >= 1 (leave it out for the default)");
  }
  if (p.name == "krum" && p.krum_select && *p.krum_select != 1) {
    return InvalidArgument("strategy krum selects exactly 1 update; krum_select " +
                           std::to_string(*p.krum_select) + " is for multikrum");
  }
  if (p.krum_select && p.name != "krum" && p.name != "multikrum") {
    return InvalidArgument("strategy.krum_select is for krum and multikrum only");
  }
  return OkStatus();
}

ServerOptimizerParams ServerOptimizerFor(const StrategyParams& p) {
  ServerOptimizerParams o;
  if (p.name == "fedadam") o.kind = "adam";
  if (p.name == "fedyogi") o.kind = "yogi";
  if (p.name == "fedadagrad") o.kind = "adagrad";
  o.learning_rate = p.server_learning_rate.value_or(o.kind == "sgd" ? 1.0 : 0.01);
  o.beta1 = p.beta1;
  o.beta2 = p.beta2;
  o.tau = p.tau;
  return o;
}

StatusOr<std::unique_ptr<Strategy>> MakeStrategy(const StrategyParams& p) {
  RETURN_IF_ERROR(ValidateStrategy(p));
  std::unique_ptr<Strategy> s;
  if (p.name == "median") {
    s = std::make_unique<CoordinateMedian>();
  } else if (p.name == "trimmed_mean") {
    s = std::make_unique<TrimmedMean>(p.trim_fraction);
  } else if (p.name == "krum") {
    s = std::make_unique<Krum>(p.byzantine, 1);
  } else if (p.name == "multikrum") {
    // m = 0: all but the f worst-placed, as recommended by Blanchard et al.
    s = std::make_unique<Krum>(p.byzantine, p.krum_select.value_or(0));
  } else {
    s = std::make_unique<FedAvg>();
  }
  return s;
}

}  // namespace fleet
