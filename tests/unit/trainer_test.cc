// LibTorch training on a small synthetic problem: learns, stays deterministic, refuses data that
// does not fit the model.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

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
