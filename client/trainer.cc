#include "client/trainer.h"

#include <dlfcn.h>
#include <torch/torch.h>

#include <cmath>

#include "client/torch_models.h"
#include "common/log.h"

namespace fleet {
namespace {

std::vector<float> ExportParams(const Net& net, const ModelLayout& layout) {
  std::vector<float> out(layout.total);
  auto named = net->named_parameters();
  for (const TensorSlot& t : layout.tensors) {
    torch::Tensor p = named[t.name].detach().contiguous();
    std::memcpy(out.data() + t.offset, p.data_ptr<float>(), t.numel * sizeof(float));
  }
  return out;
}

torch::Tensor Features(const Dataset& d) {
  return torch::from_blob(const_cast<float*>(d.features.data()),
                          {static_cast<int64_t>(d.rows), static_cast<int64_t>(d.cols)},
                          torch::kFloat32);
}

torch::Tensor Targets(const v1::ModelSpec& model, const Dataset& d) {
  if (model.task() == "autoencoder") return Features(d);  // reconstruct the input
  torch::Tensor y = torch::from_blob(const_cast<float*>(d.labels.data()),
                                     {static_cast<int64_t>(d.rows)}, torch::kFloat32);
  if (model.task() == "classification") return y.to(torch::kInt64);
  return y.unsqueeze(1);
}

torch::Tensor Loss(const v1::ModelSpec& model, const torch::Tensor& out, const torch::Tensor& y) {
  if (model.task() == "classification") return torch::nn::functional::cross_entropy(out, y);
  return torch::mse_loss(out, y);
}

EvalResult Eval(const Net& net, const v1::ModelSpec& model, const Dataset& d) {
  EvalResult r;
  if (d.rows == 0) return r;
  net->eval();
  torch::InferenceMode guard;
  torch::Tensor x = Features(d);
  torch::Tensor y = Targets(model, d);
  torch::Tensor out = net->forward(x);
  r.num_examples = d.rows;
  r.loss = Loss(model, out, y).item<double>();
  if (model.task() == "classification") {
    r.accuracy = out.argmax(1).eq(y).to(torch::kFloat64).mean().item<double>();
  }
  return r;
}

}  // namespace

void ConfigureTorchThreads(int torch_threads) {
  // OpenBLAS reads OPENBLAS_NUM_THREADS when it loads, before main(); set it explicitly too, so a
  // missing environment variable cannot oversubscribe the cores together with torch's own pool.
  using SetThreads = void (*)(int);
  if (auto* set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set(1);
  } else {
    FLEET_LOG(Warn) << "OpenBLAS not loaded: torch uses reference BLAS and trains ~7x slower; "
                       "install libopenblas0-pthread (scripts/install-deps.sh)";
  }
  torch::set_num_threads(std::max(1, torch_threads));
}

Status CheckDataFitsModel(const v1::ModelSpec& model, const Dataset& data) {
  if (data.cols != model.input_dim()) {
    return FailedPrecondition("local data has " + std::to_string(data.cols) +
                              " features, the job's model expects " +
                              std::to_string(model.input_dim()));
  }
  if (model.task() == "classification") {
    for (size_t i = 0; i < data.rows; ++i) {
      float l = data.labels[i];
      if (l != std::floor(l) || l < 0 || l >= static_cast<float>(model.output_dim())) {
        return FailedPrecondition("local label " + std::to_string(l) + " (row " +
                                  std::to_string(i) + ") is not a class in [0, " +
                                  std::to_string(model.output_dim()) +
                                  "); check label_offset in the client config");
      }
    }
  } else if (model.task() == "autoencoder") {
    return OkStatus();  // unlabeled: the input is the target
  } else if (model.output_dim() != 1) {
    return FailedPrecondition("regression needs output_dim 1 (one label column)");
  }
  return OkStatus();
}

StatusOr<TrainResult> TrainLocal(const v1::ModelSpec& model, const v1::TrainSpec& train,
                                 const ModelLayout& layout, const std::vector<TensorView>& init,
                                 const Dataset& train_data, const Dataset& val_data,
                                 uint64_t seed, const std::function<void()>& between_batches) {
  RETURN_IF_ERROR(CheckDataFitsModel(model, train_data));
  try {
    torch::manual_seed(seed);
    Net net = MakeNet(model);
    RETURN_IF_ERROR(LoadParams(net, init));
    std::unique_ptr<torch::optim::Optimizer> opt;
    if (train.optimizer() == "adam") {
      opt = std::make_unique<torch::optim::Adam>(
          net->parameters(),
          torch::optim::AdamOptions(train.learning_rate()).weight_decay(train.weight_decay()));
    } else {
      opt = std::make_unique<torch::optim::SGD>(
          net->parameters(), torch::optim::SGDOptions(train.learning_rate())
                                 .momentum(train.momentum())
                                 .weight_decay(train.weight_decay()));
    }
    // FedProx (Li et al., MLSys 2020): mu/2 * ||w - w_global||^2 keeps local models near the
    // global one on non-IID data; the reported loss is the data loss alone.
    const double mu = train.proximal_mu();
    std::vector<torch::Tensor> anchor;
    if (mu > 0) {
      for (const auto& p : net->parameters()) anchor.push_back(p.detach().clone());
    }
    torch::Tensor x = Features(train_data);
    torch::Tensor y = Targets(model, train_data);
    const int64_t n = static_cast<int64_t>(train_data.rows);
    const int64_t bs = train.batch_size();
    double epoch_loss = 0;
    for (uint32_t epoch = 0; epoch < train.local_epochs(); ++epoch) {
      net->train();
      torch::Tensor perm = torch::randperm(n, torch::kInt64);
      double loss_sum = 0;
      for (int64_t start = 0; start < n; start += bs) {
        if (between_batches) between_batches();
        torch::Tensor idx = perm.slice(0, start, std::min(n, start + bs));
        torch::Tensor xb = x.index_select(0, idx);
        torch::Tensor yb = y.index_select(0, idx);
        opt->zero_grad();
        torch::Tensor loss = Loss(model, net->forward(xb), yb);
        if (mu > 0) {
          torch::Tensor prox = torch::zeros({}, torch::kFloat32);
          auto params = net->parameters();
          for (size_t k = 0; k < params.size(); ++k) {
            prox = prox + (params[k] - anchor[k]).pow(2).sum();
          }
          (loss + 0.5 * mu * prox).backward();
        } else {
          loss.backward();
        }
        opt->step();
        loss_sum += loss.item<double>() * static_cast<double>(idx.size(0));
      }
      epoch_loss = loss_sum / static_cast<double>(n);
    }
    if (!std::isfinite(epoch_loss)) {
      return FailedPrecondition("local training diverged (non-finite loss); lower learning_rate");
    }
    TrainResult r;
    r.num_examples = train_data.rows;
    r.train_loss = epoch_loss;
    EvalResult v = Eval(net, model, val_data);
    r.val_loss = v.loss;
    r.val_accuracy = v.accuracy;
    r.params = ExportParams(net, layout);
    return r;
  } catch (const c10::Error& e) {
    return Internal(std::string("torch: ") + e.what_without_backtrace());
  }
}

StatusOr<EvalResult> EvaluateModel(const v1::ModelSpec& model,
                                   const std::vector<TensorView>& params, const Dataset& data) {
  RETURN_IF_ERROR(CheckDataFitsModel(model, data));
  try {
    Net net = MakeNet(model);
    RETURN_IF_ERROR(LoadParams(net, params));
    return Eval(net, model, data);
  } catch (const c10::Error& e) {
    return Internal(std::string("torch: ") + e.what_without_backtrace());
  }
}

StatusOr<std::vector<int>> PredictClasses(const v1::ModelSpec& model,
                                          const std::vector<TensorView>& params,
                                          const Dataset& data) {
  if (model.task() != "classification") return InvalidArgument("not a classification model");
  RETURN_IF_ERROR(CheckDataFitsModel(model, data));
  try {
    Net net = MakeNet(model);
    RETURN_IF_ERROR(LoadParams(net, params));
    net->eval();
    torch::InferenceMode guard;
    torch::Tensor pred = net->forward(Features(data)).argmax(1).to(torch::kInt64).contiguous();
    const int64_t* p = pred.data_ptr<int64_t>();
    return std::vector<int>(p, p + pred.numel());
  } catch (const c10::Error& e) {
    return Internal(std::string("torch: ") + e.what_without_backtrace());
  }
}

}  // namespace fleet
