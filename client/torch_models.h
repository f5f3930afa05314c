// LibTorch modules for the job's ModelSpec, shared by training (trainer.cc) and on-device
// inference (control/inference_model.cc). Includes torch: keep it out of other headers.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "common/status.h"
#include "common/tensor_codec.h"
#include "proto/fleet.pb.h"

namespace fleet {

// Every model type: a module whose parameter names match common/model_layout.h and whose
// forward maps [batch, input_dim] to [batch, output_dim].
class NetImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
using Net = std::shared_ptr<NetImpl>;

inline torch::Tensor Activate(const std::string& activation, torch::Tensor x) {
  if (activation == "relu") return torch::relu(x);
  if (activation == "tanh") return torch::tanh(x);
  return torch::sigmoid(x);
}

// An MLP ("fc0.weight", ...).
class MlpImpl : public NetImpl {
 public:
  explicit MlpImpl(const v1::ModelSpec& spec) : activation_(spec.activation()) {
    std::vector<int64_t> dims{spec.input_dim()};
    for (auto h : spec.hidden()) dims.push_back(h);
    dims.push_back(spec.output_dim());
    for (size_t i = 0; i + 1 < dims.size(); ++i) {
      layers_.push_back(register_module("fc" + std::to_string(i),
                                        torch::nn::Linear(dims[i], dims[i + 1])));
    }
    dropout_ = register_module("dropout", torch::nn::Dropout(spec.dropout()));
  }

  torch::Tensor forward(torch::Tensor x) override {
    for (size_t i = 0; i < layers_.size(); ++i) {
      x = layers_[i]->forward(x);
      if (i + 1 < layers_.size()) x = dropout_->forward(Activate(activation_, x));
    }
    return x;
  }

 private:
  std::string activation_;
  std::vector<torch::nn::Linear> layers_;
  torch::nn::Dropout dropout_{nullptr};
};

// A 1D-CNN sequence model over a window ("conv0.weight", ..., "fc.weight"): the time-major
// input [batch, length * channels] becomes [batch, channels, length]; same-padded convolutions
// with the activation, global average pooling over time, one linear layer.
class Cnn1dImpl : public NetImpl {
 public:
  explicit Cnn1dImpl(const v1::ModelSpec& spec)
      : activation_(spec.activation()), channels_(spec.channels()) {
    int64_t in = spec.channels();
    const int64_t k = spec.kernel_size();
    for (int i = 0; i < spec.hidden_size(); ++i) {
      convs_.push_back(register_module(
          "conv" + std::to_string(i),
          torch::nn::Conv1d(torch::nn::Conv1dOptions(in, spec.hidden(i), k).padding(k / 2))));
      in = spec.hidden(i);
    }
    fc_ = register_module("fc", torch::nn::Linear(in, spec.output_dim()));
    dropout_ = register_module("dropout", torch::nn::Dropout(spec.dropout()));
  }

  torch::Tensor forward(torch::Tensor x) override {
    x = x.view({x.size(0), -1, channels_}).transpose(1, 2);
    for (auto& conv : convs_) x = dropout_->forward(Activate(activation_, conv->forward(x)));
    return fc_->forward(x.mean(2));
  }

 private:
  std::string activation_;
  int64_t channels_;
  std::vector<torch::nn::Conv1d> convs_;
  torch::nn::Linear fc_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
};

// The module for `spec` (LayoutFor(spec) must have succeeded).
inline Net MakeNet(const v1::ModelSpec& spec) {
  if (spec.type() == "cnn1d") return std::make_shared<Cnn1dImpl>(spec);
  return std::make_shared<MlpImpl>(spec);
}

// Copies `views` (named as in common/model_layout.h) into the module's parameters.
inline Status LoadParams(const Net& net, const std::vector<TensorView>& views) {
  auto named = net->named_parameters();
  torch::NoGradGuard no_grad;
  for (const TensorView& v : views) {
    torch::Tensor* p = named.find(v.slot->name);
    if (p == nullptr) return Internal("model has no parameter '" + v.slot->name + "'");
    std::vector<int64_t> shape(v.slot->shape.begin(), v.slot->shape.end());
    // Zero-copy view of the received buffer; the only copy is into the parameter itself.
    torch::Tensor src = torch::from_blob(const_cast<float*>(v.data), shape, torch::kFloat32);
    if (!p->sizes().equals(src.sizes())) {
      return Internal("parameter '" + v.slot->name + "' shape mismatch");
    }
    p->copy_(src);
  }
  return OkStatus();
}

}  // namespace fleet
