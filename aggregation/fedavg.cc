#include "aggregation/fedavg.h"

#include <algorithm>
#include <random>

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
  size_t covered = 0;
  for (const ParamSpan& s : update) {
    if (s.offset + s.size > sum_.size()) {
      return InvalidArgument("update span [" + std::to_string(s.offset) + ", " +
                             std::to_string(s.offset + s.size) + ") exceeds model size " +
                             std::to_string(sum_.size()));
    }
    covered += s.size;
  }
  if (covered != sum_.size()) {
    return InvalidArgument("update covers " + std::to_string(covered) + " of " +
                           std::to_string(sum_.size()) + " parameters");
  }
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

StatusOr<std::unique_ptr<Strategy>> MakeStrategy(const std::string& name) {
  if (name == "fedavg") return std::unique_ptr<Strategy>(new FedAvg());
  return InvalidArgument("unknown strategy '" + name + "' (supported: fedavg)");
}

}  // namespace fleet
