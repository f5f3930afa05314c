// Robust aggregation for fleets with faulty or poisoned devices. Unlike FedAvg these need every
// update at once, so they hold N flat copies of the model (memory O(N·D)) and cannot run under
// secure aggregation (the coordinator would only see the sum); job specs refuse that pairing.
// Each is unweighted by example count, as in the papers: a device cannot buy influence by
// claiming more examples.
//   median        coordinate-wise median (Yin et al., ICML 2018)
//   trimmed_mean  coordinate-wise mean after dropping the ⌊β·n⌋ smallest and largest values
//                 (Yin et al., ICML 2018), β = trim_fraction in [0, 0.5)
//   krum          the update with the least sum of squared distances to its n − f − 2 nearest
//                 others (Blanchard et al., NeurIPS 2017); needs n ≥ 2f + 3
//   multikrum     the mean of the m best-scored updates by the same score
#pragma once

#include "aggregation/strategy.h"

namespace fleet {

class BufferedStrategy : public Strategy {
 public:
  void BeginRound(const std::vector<float>& global) override;
  Status AccumulateFit(const std::vector<ParamSpan>& update, const FitMetrics& metrics) override;
  size_t accepted() const override { return updates_.size(); }
  StatusOr<std::vector<float>> FinishFit(FitMetrics* summary) override;

 protected:
  virtual StatusOr<std::vector<float>> Combine(const std::vector<std::vector<float>>& u) = 0;

 private:
  size_t size_ = 0;
  std::vector<std::vector<float>> updates_;
  std::vector<FitMetrics> metrics_;
};

class CoordinateMedian : public BufferedStrategy {
 protected:
  StatusOr<std::vector<float>> Combine(const std::vector<std::vector<float>>& u) override;
};

class TrimmedMean : public BufferedStrategy {
 public:
  explicit TrimmedMean(double fraction) : fraction_(fraction) {}

 protected:
  StatusOr<std::vector<float>> Combine(const std::vector<std::vector<float>>& u) override;

 private:
  double fraction_;
};

class Krum : public BufferedStrategy {
 public:
  // select: how many best-scored updates to average (1: Krum; 0: n - f, multi-Krum's default).
  Krum(uint32_t byzantine, uint32_t select) : f_(byzantine), m_(select) {}

 protected:
  StatusOr<std::vector<float>> Combine(const std::vector<std::vector<float>>& u) override;

 private:
  uint32_t f_, m_;
};

}  // namespace fleet
