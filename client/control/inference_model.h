// A global model ready for batch-1 inference on the control thread: built (and its parameters
// copied in) off the control thread, then swapped in whole, so loading a model never blocks
// inference. Torch-free header; the implementation uses client/torch_models.h.
//
// Run() reuses a preallocated input tensor: call it from one thread only (the control loop).
#pragma once

#include <limits>
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
  // `int8`: dynamic int8 quantization of the Linear layers (MLP only; QNNPACK): weights are
  // stored as int8 with one scale per layer, activations are quantized per call.
  static StatusOr<std::shared_ptr<InferenceModel>> Create(const v1::ModelSpec& spec,
                                                          const std::vector<float>& params,
                                                          std::string version,
                                                          bool int8 = false);
  ~InferenceModel();

  // in: input_dim floats; out: output_dim() floats: softmax probabilities for classifiers, the
  // values for regression (e.g. a forecast), and for an autoencoder one value, the mean squared
  // reconstruction error (the anomaly score).
  Status Run(const float* in, float* out);

  size_t input_dim() const { return input_dim_; }
  size_t output_dim() const { return autoencoder_ ? 1 : output_dim_; }
  bool classifier() const { return classifier_; }
  bool autoencoder() const { return autoencoder_; }
  bool int8() const { return int8_; }
  // Autoencoders: scores above this raise the `anomaly` signal. Set before the model is
  // swapped in (a quantile of local reconstruction errors); +inf until then.
  void set_anomaly_threshold(double t) { anomaly_threshold_ = t; }
  double anomaly_threshold() const { return anomaly_threshold_; }
  const std::string& version() const { return version_; }

 private:
  struct Impl;
  InferenceModel() = default;
  std::unique_ptr<Impl> impl_;
  size_t input_dim_ = 0, output_dim_ = 0;
  bool classifier_ = false;
  bool autoencoder_ = false;
  bool int8_ = false;
  double anomaly_threshold_ = std::numeric_limits<double>::infinity();
  std::string version_;
};

}  // namespace fleet::control
