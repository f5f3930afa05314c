// LibTorch training on a small synthetic problem: learns, stays deterministic, refuses data that
// does not fit the model.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <tuple>

#include "aggregation/strategy.h"
#include "client/trainer.h"

namespace fleet {
namespace {

// Two Gaussian blobs in 4-D, labels 0/1.
Dataset Blobs(size_t n, uint32_t seed) {
  Dataset d;
  d.cols = 4;
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0, 0.5f);
  for (size_t i = 0; i < n; ++i) {
    int label = static_cast<int>(i % 2);
    for (int c = 0; c < 4; ++c) d.features.push_back((label ? 1.5f : -1.5f) + noise(rng));
    d.labels.push_back(static_cast<float>(label));
    d.rows++;
  }
  return d;
}

struct Fixture {
  v1::ModelSpec model;
  v1::TrainSpec train;
  ModelLayout layout;
  std::vector<float> init;
  std::string encoded;
  std::vector<TensorView> views;
  Fixture() {
    model.set_type("mlp");
    model.set_task("classification");
    model.set_input_dim(4);
    model.add_hidden(8);
    model.set_output_dim(2);
    model.set_activation("relu");
    train.set_local_epochs(5);
    train.set_batch_size(16);
    train.set_learning_rate(0.05f);
    train.set_optimizer("sgd");
    train.set_momentum(0.9f);
    layout = *LayoutFor(model);
    init = InitialParameters(layout, 3);
    encoded = EncodeParameters(layout, init.data());
    views = *DecodeParameters(encoded, layout);
  }
};

TEST(Trainer, LearnsSeparableProblem) {
  ConfigureTorchThreads(1);
  Fixture f;
  Dataset train = Blobs(400, 1), val = Blobs(100, 2);
  auto before = EvaluateModel(f.model, f.views, val);
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  auto r = TrainLocal(f.model, f.train, f.layout, f.views, train, val, 7);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->num_examples, 400u);
  EXPECT_GT(r->val_accuracy, 0.95);
  EXPECT_LT(r->train_loss, before->loss);
  ASSERT_EQ(r->params.size(), f.layout.total);
  EXPECT_NE(r->params, f.init);

  std::string enc = EncodeParameters(f.layout, r->params.data());
  auto views = DecodeParameters(enc, f.layout);
  ASSERT_TRUE(views.ok());
  auto after = EvaluateModel(f.model, *views, val);
  ASSERT_TRUE(after.ok());
  EXPECT_NEAR(after->accuracy, r->val_accuracy, 1e-9);
}

// Sequences of 16 steps x 2 channels: class 1 is a slow sine in channel 0, class 0 a fast one;
// channel 1 is noise. Only the temporal pattern separates them (equal means and variances).
Dataset Waves(size_t n, uint32_t seed) {
  Dataset d;
  d.cols = 32;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> phase(0, 6.28f);
  std::normal_distribution<float> noise(0, 0.3f);
  for (size_t i = 0; i < n; ++i) {
    const int label = static_cast<int>(i % 2);
    const float freq = label ? 0.4f : 2.5f, p = phase(rng);
    for (int t = 0; t < 16; ++t) {
      d.features.push_back(std::sin(freq * static_cast<float>(t) + p));  // channel 0
      d.features.push_back(noise(rng));                                   // channel 1
    }
    d.labels.push_back(static_cast<float>(label));
    d.rows++;
  }
  return d;
}

TEST(Trainer, Cnn1dSequenceModelLearnsATemporalPattern) {
  ConfigureTorchThreads(1);
  v1::ModelSpec m;
  m.set_type("cnn1d");
  m.set_task("classification");
  m.set_input_dim(32);
  m.set_channels(2);
  m.set_kernel_size(5);
  m.add_hidden(8);
  m.set_output_dim(2);
  m.set_activation("relu");
  StatusOr<ModelLayout> layout = LayoutFor(m);
  ASSERT_TRUE(layout.ok()) << layout.status().message();
  ASSERT_EQ(layout->tensors.size(), 4u);
  EXPECT_EQ(layout->tensors[0].name, "conv0.weight");
  EXPECT_EQ(layout->tensors[0].shape, (std::vector<uint32_t>{8, 2, 5}));
  EXPECT_EQ(layout->tensors[2].name, "fc.weight");
  EXPECT_EQ(layout->total, 8u * 2 * 5 + 8 + 2 * 8 + 2);
  std::vector<float> init = InitialParameters(*layout, 5);
  std::vector<TensorView> views;
  for (const TensorSlot& t : layout->tensors) views.push_back({&t, init.data() + t.offset});
  v1::TrainSpec train;
  train.set_local_epochs(15);
  train.set_batch_size(16);
  train.set_learning_rate(0.01f);
  train.set_optimizer("adam");
  Dataset data = Waves(400, 1), val = Waves(200, 2);
  StatusOr<TrainResult> r = TrainLocal(m, train, *layout, views, data, val, 1);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_GT(r->val_accuracy, 0.9) << "a sequence model separates slow from fast waves";

  v1::ModelSpec bad = m;
  bad.set_channels(3);
  EXPECT_NE(LayoutFor(bad).status().message().find("divide input_dim"), std::string::npos);
  bad = m;
  bad.set_kernel_size(4);
  EXPECT_NE(LayoutFor(bad).status().message().find("odd"), std::string::npos);
  bad = m;
  bad.clear_hidden();
  EXPECT_NE(LayoutFor(bad).status().message().find("conv widths"), std::string::npos);
}

TEST(Trainer, SameSeedSameResult) {
  ConfigureTorchThreads(1);
  Fixture f;
  Dataset train = Blobs(64, 1), val;
  val.cols = 4;
  auto a = TrainLocal(f.model, f.train, f.layout, f.views, train, val, 11);
  auto b = TrainLocal(f.model, f.train, f.layout, f.views, train, val, 11);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->params, b->params);
}

TEST(Trainer, AdamOptimizerTrains) {
  Fixture f;
  f.train.set_optimizer("adam");
  f.train.set_learning_rate(0.01f);
  auto r = TrainLocal(f.model, f.train, f.layout, f.views, Blobs(200, 1), Blobs(50, 2), 1);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GT(r->val_accuracy, 0.9);
}

double Distance(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(s);
}

TEST(Trainer, FedProxTermKeepsTheLocalModelNearTheGlobalOne) {
  ConfigureTorchThreads(1);
  Fixture f;
  Dataset train = Blobs(200, 1), val = Blobs(50, 2);
  auto plain = TrainLocal(f.model, f.train, f.layout, f.views, train, val, 5);
  f.train.set_proximal_mu(1.0f);
  auto prox = TrainLocal(f.model, f.train, f.layout, f.views, train, val, 5);
  f.train.set_proximal_mu(50.0f);
  auto tight = TrainLocal(f.model, f.train, f.layout, f.views, train, val, 5);
  ASSERT_TRUE(plain.ok() && prox.ok() && tight.ok());
  const double d0 = Distance(plain->params, f.init), d1 = Distance(prox->params, f.init),
               d2 = Distance(tight->params, f.init);
  EXPECT_LT(d1, d0);
  EXPECT_LT(d2, d1);
  EXPECT_GT(d2, 0);
  EXPECT_GT(prox->val_accuracy, 0.9) << "a moderate mu still learns";
}

TEST(Trainer, RefusesFeatureCountMismatch) {
  Fixture f;
  Dataset d = Blobs(10, 1);
  d.cols = 2;  // pretend two features per row (20 rows' worth of floats)
  d.rows = 20;
  d.labels.resize(20, 0);
  auto r = TrainLocal(f.model, f.train, f.layout, f.views, d, Dataset{}, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("local data has 2 features, the job's model expects 4"),
            std::string::npos);
}

TEST(Trainer, RefusesLabelsOutsideClasses) {
  Fixture f;
  Dataset d = Blobs(10, 1);
  d.labels[3] = 2;  // only classes 0 and 1 exist
  auto r = TrainLocal(f.model, f.train, f.layout, f.views, d, Dataset{}, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("label_offset"), std::string::npos);
}

TEST(Trainer, RegressionTrains) {
  Fixture f;
  f.model.set_task("regression");
  f.model.set_output_dim(1);
  f.layout = *LayoutFor(f.model);
  f.init = InitialParameters(f.layout, 3);
  f.encoded = EncodeParameters(f.layout, f.init.data());
  f.views = *DecodeParameters(f.encoded, f.layout);
  Dataset d = Blobs(200, 1);
  for (size_t i = 0; i < d.rows; ++i) d.labels[i] = d.features[i * 4] * 2.0f;  // y = 2 x0
  auto before = EvaluateModel(f.model, f.views, d);
  f.train.set_learning_rate(0.01f);
  auto r = TrainLocal(f.model, f.train, f.layout, f.views, d, d, 1);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_LT(r->val_loss, before->loss * 0.2);
}

}  // namespace
}  // namespace fleet

namespace fleet {
namespace {

// Convergence smoke test on a synthetic non-IID problem, in process (the real trainer and the
// real strategies, no network): 4 classes of Gaussian blobs in 6-D; each of 8 clients holds
// mostly two classes. Every strategy that aggregates on the sum must reach high accuracy on a
// balanced test set within a few rounds. A threshold on accuracy, never on time.
Dataset Skewed(size_t n, int major_a, int major_b, uint32_t seed) {
  Dataset d;
  d.cols = 6;
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0, 0.7f);
  std::uniform_int_distribution<int> any(0, 3);
  for (size_t i = 0; i < n; ++i) {
    int label = i % 10 < 9 ? (i % 2 ? major_a : major_b) : any(rng);  // 90% from two classes
    for (int c = 0; c < 6; ++c) {
      float center = (c % 4 == label) ? 2.0f : (c == 4 + label % 2 ? 1.0f : -0.5f);
      d.features.push_back(center + noise(rng));
    }
    d.labels.push_back(static_cast<float>(label));
    d.rows++;
  }
  return d;
}

double FederatedAccuracy(const std::string& name, float mu) {
  v1::ModelSpec model;
  model.set_type("mlp");
  model.set_task("classification");
  model.set_input_dim(6);
  model.add_hidden(16);
  model.set_output_dim(4);
  model.set_activation("relu");
  v1::TrainSpec train;
  train.set_local_epochs(2);
  train.set_batch_size(16);
  train.set_learning_rate(0.05f);
  train.set_optimizer("sgd");
  train.set_proximal_mu(mu);
  const ModelLayout layout = *LayoutFor(model);
  std::vector<Dataset> clients;
  for (int k = 0; k < 8; ++k) clients.push_back(Skewed(120, k % 4, (k + 1) % 4, 100 + k));
  Dataset test = Skewed(400, 0, 1, 999), test2 = Skewed(400, 2, 3, 998);
  StrategyParams p;
  p.name = name;
  std::unique_ptr<Strategy> strategy = std::move(MakeStrategy(p)).value();
  ServerOptimizer server(ServerOptimizerFor(p));
  std::vector<float> global = InitialParameters(layout, 1);
  for (uint32_t round = 1; round <= 8; ++round) {
    std::string enc = EncodeParameters(layout, global.data());
    auto views = *DecodeParameters(enc, layout);
    strategy->BeginRound(global);
    for (size_t k = 0; k < clients.size(); ++k) {
      Dataset none;
      none.cols = 6;
      auto r = TrainLocal(model, train, layout, views, clients[k], none, round * 100 + k);
      EXPECT_TRUE(r.ok());
      FitMetrics m;
      m.num_examples = r->num_examples;
      EXPECT_TRUE(strategy->AccumulateFit({{r->params.data(), 0, r->params.size()}}, m).ok());
    }
    std::vector<float> delta = *strategy->FinishFit(nullptr);
    for (size_t i = 0; i < delta.size(); ++i) delta[i] -= global[i];
    server.Apply(&global, delta);
  }
  std::string enc = EncodeParameters(layout, global.data());
  auto views = *DecodeParameters(enc, layout);
  return (EvaluateModel(model, views, test)->accuracy + EvaluateModel(model, views, test2)->accuracy) / 2;
}

TEST(Convergence, NonIidFleetConvergesUnderEachStrategyFamily) {
  ConfigureTorchThreads(1);
  const double chance = 0.25;
  for (const auto& [name, mu, floor] : std::vector<std::tuple<std::string, float, double>>{
           {"fedavg", 0.0f, 0.9}, {"fedprox", 0.01f, 0.9}, {"fedyogi", 0.0f, 0.85},
           {"median", 0.0f, 0.85}}) {
    const double acc = FederatedAccuracy(name, mu);
    std::printf("convergence: %s accuracy %.3f (chance %.2f)\n", name.c_str(), acc, chance);
    EXPECT_GT(acc, floor) << name;
  }
}

}  // namespace
}  // namespace fleet
