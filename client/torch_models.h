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

// An MLP whose parameter names match common/model_layout.h ("fc0.weight", ...).
class MlpImpl : public torch::nn::Module {
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

  torch::Tensor forward(torch::Tensor x) {
    for (size_t i = 0; i < layers_.size(); ++i) {
      x = layers_[i]->forward(x);
      if (i + 1 < layers_.size()) {
        if (activation_ == "relu") x = torch::relu(x);
        else if (activation_ == "tanh") x = torch::tanh(x);
        else x = torch::sigmoid(x);
        x = dropout_->forward(x);
      }
    }
    return x;
  }

 private:
  std::string activation_;
  std::vector<torch::nn::Linear> layers_;
  torch::nn::Dropout dropout_{nullptr};
};
TORCH_MODULE(Mlp);

// Copies `views` (named as in common/model_layout.h) into the module's parameters.
inline Status LoadParams(Mlp& net, const std::vector<TensorView>& views) {
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
