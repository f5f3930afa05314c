// A global model ready for batch-1 inference on the control thread: built (and its parameters
// copied in) off the control thread, then swapped in whole, so loading a model never blocks
// inference. Torch-free header; the implementation uses client/torch_models.h.
//
// Run() reuses a preallocated input tensor: call it from one thread only (the control loop).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "proto/fleet.pb.h"

namespace fleet::control {

class InferenceModel {
 public:
  // `params` is the flat parameter vector in common/model_layout.h order. `version` is shown in
  // every command the model causes (e.g. "job-3/round-7").
  static StatusOr<std::shared_ptr<InferenceModel>> Create(const v1::ModelSpec& spec,
                                                          const std::vector<float>& params,
                                                          std::string version);
  ~InferenceModel();

  // in: input_dim floats; out: output_dim floats (softmax probabilities for classifiers).
  Status Run(const float* in, float* out);

  size_t input_dim() const { return input_dim_; }
  size_t output_dim() const { return output_dim_; }
  bool classifier() const { return classifier_; }
  const std::string& version() const { return version_; }

 private:
  struct Impl;
  InferenceModel() = default;
  std::unique_ptr<Impl> impl_;
  size_t input_dim_ = 0, output_dim_ = 0;
  bool classifier_ = false;
  std::string version_;
};

}  // namespace fleet::control
