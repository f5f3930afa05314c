// Aggregation strategies over plain float spans: no gRPC, no torch, deterministic given the seed.
// A Strategy instance serves one job. It is not thread-safe: the coordinator serializes calls.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "aggregation/server_optimizer.h"
#include "common/status.h"

namespace fleet {

// One contiguous run of an update's parameters: `size` floats that belong at `offset` of the
// flat global parameter vector.
struct ParamSpan {
  const float* data;
  size_t offset;
  size_t size;
};

// OK when `update` covers exactly [0, size) within bounds; else InvalidArgument saying how not.
Status CheckCoverage(const std::vector<ParamSpan>& update, size_t size);

struct FitMetrics {
  uint64_t num_examples = 0;
  double train_loss = 0;
  double val_loss = 0;
  double val_accuracy = 0;
};

struct EvalMetrics {
  uint64_t num_examples = 0;
  double loss = 0;
  double accuracy = 0;
};

class Strategy {
 public:
  virtual ~Strategy() = default;

  // configure_fit: which of `candidates` train in `round`. Default: a uniform sample of `target`
  // (all when fewer), reproducible from (seed, round).
  virtual std::vector<std::string> SelectClients(const std::vector<std::string>& candidates,
                                                 uint32_t round, size_t target, uint64_t seed);

  // Starts a round from the current global parameters.
  virtual void BeginRound(const std::vector<float>& global) = 0;
  // Folds one validated update in as it arrives; memory stays O(model size).
  virtual Status AccumulateFit(const std::vector<ParamSpan>& update, const FitMetrics& metrics) = 0;
  // Number of updates folded in this round.
  virtual size_t accepted() const = 0;
  // aggregate_fit: the new global parameters. FAILED_PRECONDITION when nothing was accumulated.
  virtual StatusOr<std::vector<float>> FinishFit(FitMetrics* summary) = 0;
  // aggregate_evaluate.
  virtual EvalMetrics AggregateEvaluate(const std::vector<EvalMetrics>& results);
};

// What a job spec's `strategy:` block selects (README "Strategies"). Names:
//   fedavg, fedprox (FedAvg aggregation; FedProx's proximal term is applied by the clients),
//   fedadam, fedyogi, fedadagrad (FedAvg aggregation, then an adaptive server optimizer),
//   median, trimmed_mean, krum, multikrum (robust aggregation; see aggregation/robust.h).
struct StrategyParams {
  std::string name = "fedavg";
  // Unset: 1.0 for fedavg/fedprox/robust, 0.01 for the adaptive ones. Set: (0, 10].
  std::optional<double> server_learning_rate;
  double beta1 = 0.9, beta2 = 0.99, tau = 1e-3;
  double trim_fraction = 0.1;
  uint32_t byzantine = 1;
  // Unset: 1 for krum, n - f for multikrum. Set: >= 1 (krum: exactly 1).
  std::optional<uint32_t> krum_select;
};

// Every strategy name, for error messages.
const char* StrategyNames();
// Robust strategies need each update on its own: they cannot run under secure aggregation.
bool NeedsIndividualUpdates(const std::string& name);
Status ValidateStrategy(const StrategyParams& params);
StatusOr<std::unique_ptr<Strategy>> MakeStrategy(const StrategyParams& params);
// How the aggregate moves the global model (sgd with rate 1 unless fedadam/fedyogi/fedadagrad or
// server_learning_rate say otherwise).
ServerOptimizerParams ServerOptimizerFor(const StrategyParams& params);

}  // namespace fleet
