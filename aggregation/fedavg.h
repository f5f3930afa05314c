// Weighted FedAvg (McMahan et al. 2017): the new global model is the example-weighted mean of the
// clients' parameters. Updates are summed into one double accumulator as they arrive.
#pragma once

#include "aggregation/strategy.h"

namespace fleet {

class FedAvg : public Strategy {
 public:
  void BeginRound(const std::vector<float>& global) override;
  Status AccumulateFit(const std::vector<ParamSpan>& update, const FitMetrics& metrics) override;
  size_t accepted() const override { return accepted_; }
  StatusOr<std::vector<float>> FinishFit(FitMetrics* summary) override;

 private:
  std::vector<double> sum_;  // Σ n_i · w_i
  double total_weight_ = 0;  // Σ n_i
  size_t accepted_ = 0;
  FitMetrics weighted_;      // Σ n_i · metric_i
};

}  // namespace fleet
