// Server-side optimizers (Reddi et al., "Adaptive Federated Optimization", ICLR 2021): the
// aggregated client delta Δ_t (new aggregate minus current global) is treated as a
// pseudo-gradient step and applied by
//   sgd:      x ← x + η·Δ                         (η = 1 is plain FedAvg)
//   adagrad:  m ← β1·m + (1−β1)·Δ;  v ← v + Δ²
//   adam:     m ← β1·m + (1−β1)·Δ;  v ← β2·v + (1−β2)·Δ²
//   yogi:     m ← β1·m + (1−β1)·Δ;  v ← v − (1−β2)·Δ²·sign(v − Δ²)
//   then      x ← x + η·m / (√v + τ)
// with m₀ = 0 and v₀ = τ² (the paper's Algorithm 2). They act on the aggregate only, so they
// combine with secure aggregation. State is O(model size); not thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace fleet {

struct ServerOptimizerParams {
  std::string kind = "sgd";  // sgd | adagrad | adam | yogi
  double learning_rate = 1.0;
  double beta1 = 0.9;
  double beta2 = 0.99;
  double tau = 1e-3;
};

class ServerOptimizer {
 public:
  explicit ServerOptimizer(ServerOptimizerParams p) : p_(std::move(p)) {}
  // global ← global updated with the aggregated delta (same size).
  void Apply(std::vector<float>* global, const std::vector<float>& delta);

  // The moment estimates, for checkpoints: empty for sgd or before the first Apply, otherwise a
  // small header ("FLOPT1", kind, size) and m then v as little-endian doubles.
  std::string SaveState() const;
  // Restores SaveState() output taken from an optimizer of the same kind over `size` parameters.
  Status LoadState(const std::string& state, size_t size);

 private:
  ServerOptimizerParams p_;
  std::vector<double> m_, v_;
};

}  // namespace fleet
