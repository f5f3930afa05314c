#include "client/control/inference_model.h"

#include "client/torch_models.h"
#include "common/model_layout.h"

namespace fleet::control {

struct InferenceModel::Impl {
  explicit Impl(const v1::ModelSpec& spec) : net(MakeNet(spec)) {}
  Net net;
  torch::Tensor input;  // [1, input_dim], reused by every Run()
};

InferenceModel::~InferenceModel() = default;

StatusOr<std::shared_ptr<InferenceModel>> InferenceModel::Create(const v1::ModelSpec& spec,
                                                                 const std::vector<float>& params,
                                                                 std::string version) {
  ASSIGN_OR_RETURN(ModelLayout layout, LayoutFor(spec));
  if (params.size() != layout.total) {
    return InvalidArgument("model has " + std::to_string(params.size()) +
                           " parameters; its spec needs " + std::to_string(layout.total));
  }
  std::shared_ptr<InferenceModel> m(new InferenceModel());
  try {
    m->impl_ = std::make_unique<Impl>(spec);
    std::vector<TensorView> views;
    for (const TensorSlot& t : layout.tensors) views.push_back({&t, params.data() + t.offset});
    RETURN_IF_ERROR(LoadParams(m->impl_->net, views));
    m->impl_->net->eval();
    m->impl_->input = torch::zeros({1, static_cast<int64_t>(spec.input_dim())});
  } catch (const c10::Error& e) {
    return Internal(std::string("torch: ") + e.what_without_backtrace());
  }
  m->input_dim_ = spec.input_dim();
  m->output_dim_ = spec.output_dim();
  m->classifier_ = spec.task() == "classification";
  m->autoencoder_ = spec.task() == "autoencoder";
  m->version_ = std::move(version);
  return m;
}

Status InferenceModel::Run(const float* in, float* out) {
  try {
    torch::InferenceMode guard;
    std::memcpy(impl_->input.data_ptr<float>(), in, input_dim_ * sizeof(float));
    torch::Tensor y = impl_->net->forward(impl_->input);
    if (autoencoder_) {
      out[0] = (y - impl_->input).pow(2).mean().item<float>();
      return OkStatus();
    }
    if (classifier_) y = torch::softmax(y, 1);
    y = y.contiguous();
    std::memcpy(out, y.data_ptr<float>(), output_dim_ * sizeof(float));
    return OkStatus();
  } catch (const c10::Error& e) {
    return Internal(std::string("torch: ") + e.what_without_backtrace());
  }
}

}  // namespace fleet::control
