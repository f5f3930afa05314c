// Local training and evaluation of the job's model with LibTorch. This header is torch-free so
// that only trainer.cc pays torch's compile cost.
//
// Not thread-safe across calls on different threads (torch's global seed); the client runs one
// task at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "client/data_source.h"
#include "common/status.h"
#include "common/tensor_codec.h"
#include "proto/fleet.pb.h"

namespace fleet {

struct TrainResult {
  std::vector<float> params;   // flat, in layout order
  uint64_t num_examples = 0;
  double train_loss = 0;       // mean loss over the last local epoch
  double val_loss = 0;         // on the local validation split (0 when none)
  double val_accuracy = 0;
};

struct EvalResult {
  uint64_t num_examples = 0;
  double loss = 0;
  double accuracy = 0;         // classification; for regression: 0
};

// Sets torch intra-op threads and pins OpenBLAS to one thread (see README: Performance).
void ConfigureTorchThreads(int torch_threads);

// Checks that `data` fits the model (feature count, label range) before any work.
Status CheckDataFitsModel(const v1::ModelSpec& model, const Dataset& data);

// `between_batches` (optional) runs before every mini-batch: the control loop pauses training
// there when inference misses its deadline (client/control/training_gate.h).
StatusOr<TrainResult> TrainLocal(const v1::ModelSpec& model, const v1::TrainSpec& train,
                                 const ModelLayout& layout, const std::vector<TensorView>& init,
                                 const Dataset& train_data, const Dataset& val_data,
                                 uint64_t seed,
                                 const std::function<void()>& between_batches = nullptr);

StatusOr<EvalResult> EvaluateModel(const v1::ModelSpec& model,
                                   const std::vector<TensorView>& params, const Dataset& data);

// Classification: the predicted class of every row (for confusion matrices).
StatusOr<std::vector<int>> PredictClasses(const v1::ModelSpec& model,
                                          const std::vector<TensorView>& params,
                                          const Dataset& data);

}  // namespace fleet
