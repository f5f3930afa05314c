// Helpers of `scripts/bench.sh quality`, each printing one JSON object:
//   central:  the centralized reference: the job's model trained with the job's optimizer
//             settings on the pooled training data of the given client configs (what a federation
//             would have if the data were pooled), for rounds x local_epochs epochs (or
//             --epochs N), evaluated on the pooled evaluation data;
//   evaluate: a model checkpoint (coordinator state_dir/checkpoints/JOB/round-N.tensors)
//             evaluated on the evaluation data of the given client configs, with its confusion
//             matrix ("confusion"[true][predicted]) for classification models.
//
// usage: quality_tool central JOB_YAML [--epochs N] --train CLIENT_YAML... --eval CLIENT_YAML...
//        quality_tool evaluate JOB_YAML CHECKPOINT --eval CLIENT_YAML...
#include <cstdio>
#include <string>
#include <vector>

#include "client/client_config.h"
#include "client/trainer.h"
#include "common/file_util.h"
#include "common/job_spec.h"

using namespace fleet;

namespace {

StatusOr<Dataset> Pool(const std::vector<std::string>& configs, bool train) {
  Dataset all;
  for (const auto& path : configs) {
    ASSIGN_OR_RETURN(ClientConfig c, LoadClientConfig(path));
    for (const auto& spec : c.datasets) {
      if (spec.train != train) continue;
      ASSIGN_OR_RETURN(Dataset d, LoadDataset(spec));
      if (all.rows > 0 && d.cols != all.cols) return InvalidArgument(path + ": feature count differs");
      all.cols = d.cols;
      all.rows += d.rows;
      all.features.insert(all.features.end(), d.features.begin(), d.features.end());
      all.labels.insert(all.labels.end(), d.labels.begin(), d.labels.end());
    }
  }
  return all;
}

int Fail(const Status& s) {
  std::fprintf(stderr, "quality_tool: %s\n", s.message().c_str());
  return 1;
}

int Usage() {
  std::fprintf(stderr,
               "usage: quality_tool central JOB_YAML [--epochs N] --train CLIENT_YAML... --eval "
               "CLIENT_YAML...\n"
               "       quality_tool evaluate JOB_YAML CHECKPOINT --eval CLIENT_YAML...\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return Usage();
  const std::string mode = argv[1];
  const bool central = mode == "central";
  if (!central && mode != "evaluate") return Usage();
  std::string checkpoint;
  int first = 3;
  if (!central) {
    if (argc < 4) return Usage();
    checkpoint = argv[3];
    first = 4;
  }
  std::vector<std::string> train_cfgs, eval_cfgs;
  std::vector<std::string>* into = nullptr;
  uint32_t epochs_override = 0;
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--epochs" && central && i + 1 < argc) epochs_override = std::stoul(argv[++i]);
    else if (a == "--train" && central) into = &train_cfgs;
    else if (a == "--eval") into = &eval_cfgs;
    else if (into) into->push_back(a);
    else return Fail(InvalidArgument("unexpected argument " + a));
  }
  ConfigureTorchThreads(1);
  auto spec = LoadJobSpecFile(argv[2]);
  if (!spec.ok()) return Fail(spec.status());
  auto eval = Pool(eval_cfgs, false);
  if (!eval.ok()) return Fail(eval.status());
  const ModelLayout layout = *LayoutFor(spec->model());
  std::string params;
  size_t train_rows = 0;
  uint32_t epochs = 0;
  if (central) {
    auto train = Pool(train_cfgs, true);
    if (!train.ok()) return Fail(train.status());
    std::vector<float> init = InitialParameters(layout, spec->seed());
    std::string enc = EncodeParameters(layout, init.data());
    auto views = *DecodeParameters(enc, layout);
    v1::TrainSpec t = spec->train();
    t.set_local_epochs(epochs_override ? epochs_override : spec->rounds() * t.local_epochs());
    t.set_proximal_mu(0);
    Dataset none;
    none.cols = train->cols;
    auto r = TrainLocal(spec->model(), t, layout, views, *train, none, spec->seed());
    if (!r.ok()) return Fail(r.status());
    params = EncodeParameters(layout, r->params.data());
    train_rows = train->rows;
    epochs = t.local_epochs();
  } else {
    auto bytes = ReadFile(checkpoint);
    if (!bytes.ok()) return Fail(bytes.status());
    params = std::move(bytes).value();
  }
  auto views = DecodeParameters(params, layout);
  if (!views.ok()) return Fail(views.status());
  auto e = EvaluateModel(spec->model(), *views, *eval);
  if (!e.ok()) return Fail(e.status());
  std::string confusion;
  if (!central && spec->model().task() == "classification") {
    auto pred = PredictClasses(spec->model(), *views, *eval);
    if (!pred.ok()) return Fail(pred.status());
    const size_t k = spec->model().output_dim();
    std::vector<std::vector<uint64_t>> m(k, std::vector<uint64_t>(k, 0));
    for (size_t i = 0; i < pred->size(); ++i) {
      m[static_cast<size_t>(eval->labels[i])][static_cast<size_t>((*pred)[i])]++;
    }
    confusion = ", \"confusion\": [";
    for (size_t a = 0; a < k; ++a) {
      confusion += a ? ", [" : "[";
      for (size_t b = 0; b < k; ++b) confusion += (b ? ", " : "") + std::to_string(m[a][b]);
      confusion += "]";
    }
    confusion += "]";
  }
  std::printf("{\"train_rows\": %zu, \"eval_rows\": %zu, \"epochs\": %u, \"accuracy\": %.4f, "
              "\"loss\": %.4f%s}\n",
              train_rows, eval->rows, epochs, e->accuracy, e->loss, confusion.c_str());
  return 0;
}
