// The centralized reference for `scripts/bench.sh quality`: the job's model trained with the
// job's optimizer settings on the pooled training data of the given client configs (what a
// federation would have if the data were pooled), for rounds x local_epochs epochs, then
// evaluated on each evaluation config's data. Prints one JSON object.
//
// usage: central_train JOB_YAML --train CLIENT_YAML... --eval CLIENT_YAML...
#include <cstdio>
#include <string>
#include <vector>

#include "client/client_config.h"
#include "client/trainer.h"
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
  std::fprintf(stderr, "central_train: %s\n", s.message().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: central_train JOB_YAML --train CLIENT_YAML... --eval CLIENT_YAML...\n");
    return 2;
  }
  std::vector<std::string> train_cfgs, eval_cfgs;
  std::vector<std::string>* into = nullptr;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--train") into = &train_cfgs;
    else if (a == "--eval") into = &eval_cfgs;
    else if (into) into->push_back(a);
    else return Fail(InvalidArgument("unexpected argument " + a));
  }
  ConfigureTorchThreads(1);
  auto spec = LoadJobSpecFile(argv[1]);
  if (!spec.ok()) return Fail(spec.status());
  auto train = Pool(train_cfgs, true);
  if (!train.ok()) return Fail(train.status());
  auto eval = Pool(eval_cfgs, false);
  if (!eval.ok()) return Fail(eval.status());
  const ModelLayout layout = *LayoutFor(spec->model());
  std::vector<float> init = InitialParameters(layout, spec->seed());
  std::string enc = EncodeParameters(layout, init.data());
  auto views = *DecodeParameters(enc, layout);
  v1::TrainSpec t = spec->train();
  t.set_local_epochs(spec->rounds() * t.local_epochs());
  t.set_proximal_mu(0);
  Dataset none;
  none.cols = train->cols;
  auto r = TrainLocal(spec->model(), t, layout, views, *train, none, spec->seed());
  if (!r.ok()) return Fail(r.status());
  std::string out = EncodeParameters(layout, r->params.data());
  auto trained = *DecodeParameters(out, layout);
  auto e = EvaluateModel(spec->model(), trained, *eval);
  if (!e.ok()) return Fail(e.status());
  std::printf("{\"train_rows\": %zu, \"eval_rows\": %zu, \"epochs\": %u, \"accuracy\": %.4f, "
              "\"loss\": %.4f}\n",
              train->rows, eval->rows, t.local_epochs(), e->accuracy, e->loss);
  return 0;
}
