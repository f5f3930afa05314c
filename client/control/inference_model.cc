#include "client/control/inference_model.h"

#include <ATen/native/quantized/PackedParams.h>

#include <mutex>

#include "client/torch_models.h"
#include "common/model_layout.h"

namespace fleet::control {

struct InferenceModel::Impl {
  explicit Impl(const v1::ModelSpec& spec) : net(MakeNet(spec)), activation(spec.activation()) {}
  Net net;
  torch::Tensor input;  // [1, input_dim], reused by every Run()
  // int8: the MLP's Linear layers, quantized and packed for QNNPACK, in order.
  std::vector<c10::intrusive_ptr<LinearPackedParamsBase>> int8_layers;
  std::string activation;

  torch::Tensor Forward(const torch::Tensor& x) {
    if (int8_layers.empty()) return net->forward(x);
    torch::Tensor h = x;
    for (size_t i = 0; i < int8_layers.size(); ++i) {
      h = int8_layers[i]->apply_dynamic(h, /*reduce_range=*/false);
      if (i + 1 < int8_layers.size()) h = Activate(activation, h);
    }
    return h;
  }
};

namespace {

// Symmetric per-layer int8 weights, prepacked for QNNPACK (the engine Debian's LibTorch has;
// it lacks FBGEMM).
StatusOr<std::vector<c10::intrusive_ptr<LinearPackedParamsBase>>> QuantizeLinears(
    const ModelLayout& layout, const std::vector<float>& params) {
  static std::once_flag engine;
  std::call_once(engine, [] { at::globalContext().setQEngine(at::QEngine::QNNPACK); });
  static const auto prepack =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("quantized::linear_prepack", "")
          .typed<c10::intrusive_ptr<LinearPackedParamsBase>(at::Tensor, c10::optional<at::Tensor>)>();
  std::vector<c10::intrusive_ptr<LinearPackedParamsBase>> out;
  for (size_t i = 0; i + 1 < layout.tensors.size(); i += 2) {
    const TensorSlot& w = layout.tensors[i];
    const TensorSlot& b = layout.tensors[i + 1];
    torch::Tensor wt = torch::from_blob(const_cast<float*>(params.data() + w.offset),
                                        {w.shape[0], w.shape[1]}, torch::kFloat32);
    torch::Tensor bt = torch::from_blob(const_cast<float*>(params.data() + b.offset),
                                        {b.shape[0]}, torch::kFloat32)
                           .clone();
    const double scale = std::max(wt.abs().max().item<double>(), 1e-12) / 127.0;
    torch::Tensor q = torch::quantize_per_tensor(wt, scale, 0, torch::kQInt8);
    out.push_back(prepack.call(q, bt));
  }
  return out;
}

}  // namespace

InferenceModel::~InferenceModel() = default;

StatusOr<std::shared_ptr<InferenceModel>> InferenceModel::Create(const v1::ModelSpec& spec,
                                                                 const std::vector<float>& params,
                                                                 std::string version, bool int8) {
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
    if (int8) {
      if (spec.type() != "mlp") {
        return InvalidArgument("int8 quantization applies to mlp models, not " + spec.type());
      }
      ASSIGN_OR_RETURN(m->impl_->int8_layers, QuantizeLinears(layout, params));
    }
  } catch (const c10::Error& e) {
    return Internal(std::string("torch: ") + e.what_without_backtrace());
  }
  m->input_dim_ = spec.input_dim();
  m->output_dim_ = spec.output_dim();
  m->classifier_ = spec.task() == "classification";
  m->autoencoder_ = spec.task() == "autoencoder";
  m->int8_ = int8;
  m->version_ = std::move(version);
  return m;
}

Status InferenceModel::Run(const float* in, float* out) {
  try {
    torch::InferenceMode guard;
    std::memcpy(impl_->input.data_ptr<float>(), in, input_dim_ * sizeof(float));
    torch::Tensor y = impl_->Forward(impl_->input);
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
