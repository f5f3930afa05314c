// Aggregation strategies and server optimizers against independent computations: robust
// estimators on hand-checkable inputs, the adaptive server optimizers against the formulas of
// Reddi et al. (2021) written out here, and the job-spec rules that combine them with secure
// aggregation.
#include <gtest/gtest.h>

#include <cmath>

#include "aggregation/robust.h"
#include "aggregation/server_optimizer.h"
#include "aggregation/strategy.h"
#include "common/job_spec.h"

namespace fleet {
namespace {

std::vector<float> Aggregate(Strategy& s, const std::vector<std::vector<float>>& updates,
                       std::vector<uint64_t> weights = {}) {
  s.BeginRound(std::vector<float>(updates[0].size(), 0.0f));
  for (size_t i = 0; i < updates.size(); ++i) {
    FitMetrics m;
    m.num_examples = weights.empty() ? 1 : weights[i];
    EXPECT_TRUE(s.AccumulateFit({{updates[i].data(), 0, updates[i].size()}}, m).ok());
  }
  auto out = s.FinishFit(nullptr);
  EXPECT_TRUE(out.ok()) << out.status().message();
  return out.ok() ? *out : std::vector<float>();
}

TEST(Robust, CoordinateMedianOddEvenAndIgnoresExampleCounts) {
  CoordinateMedian m;
  EXPECT_EQ(Aggregate(m, {{1, 10}, {3, -5}, {2, 100}}), (std::vector<float>{2, 10}));
  EXPECT_EQ(Aggregate(m, {{1, 0}, {4, 0}, {2, 0}, {100, 0}}), (std::vector<float>{3, 0}));
  // A device claiming a million examples gets one vote like everyone else.
  EXPECT_EQ(Aggregate(m, {{1}, {2}, {1000}}, {1, 1, 1000000}), (std::vector<float>{2}));
}

TEST(Robust, TrimmedMeanDropsTheExtremesOnEachSide) {
  TrimmedMean t(0.2);  // n = 5: one from each end
  EXPECT_EQ(Aggregate(t, {{-100}, {1}, {2}, {3}, {100}}), (std::vector<float>{2}));
  TrimmedMean none(0.0);
  EXPECT_EQ(Aggregate(none, {{1}, {2}, {6}}), (std::vector<float>{3}));
  TrimmedMean all(0.49);
  all.BeginRound({0});
  FitMetrics one;
  one.num_examples = 1;
  float v = 1;
  ASSERT_TRUE(all.AccumulateFit({{&v, 0, 1}}, one).ok());
  ASSERT_TRUE(all.AccumulateFit({{&v, 0, 1}}, one).ok());
  EXPECT_EQ(all.FinishFit(nullptr).status().code(), StatusCode::kOk) << "k = 0 for n = 2";
}

TEST(Robust, KrumPicksAnHonestUpdateAndMultiKrumAveragesTheBest) {
  // Five honest updates near (1, 1), two poisoned far away; f = 2 needs n >= 7.
  std::vector<std::vector<float>> u{{1.0f, 1.0f}, {1.1f, 0.9f}, {0.9f, 1.1f}, {1.05f, 1.0f},
                                    {0.95f, 1.0f}, {50, -50}, {-40, 60}};
  Krum krum(2, 1);
  std::vector<float> k = Aggregate(krum, u);
  EXPECT_NEAR(k[0], 1.0, 0.11);
  EXPECT_NEAR(k[1], 1.0, 0.11);
  Krum multi(2, 0);  // m = n - f = 5: exactly the honest five
  std::vector<float> mk = Aggregate(multi, u);
  EXPECT_NEAR(mk[0], 1.0, 1e-6);
  EXPECT_NEAR(mk[1], 1.0, 1e-6);
  // Plain FedAvg on the same input is dragged far off.
  auto avg = MakeStrategy(StrategyParams{});
  EXPECT_GT(std::fabs(Aggregate(**avg, u)[0] - 1.0), 1.0);

  Krum few(2, 1);
  few.BeginRound({0, 0});
  FitMetrics one;
  one.num_examples = 1;
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(few.AccumulateFit({{u[i].data(), 0, 2}}, one).ok());
  auto r = few.FinishFit(nullptr);
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("at least 7"), std::string::npos);
}

TEST(Robust, WrongShapeIsRejectedAndLeavesTheRoundIntact) {
  CoordinateMedian m;
  m.BeginRound({0, 0});
  FitMetrics one;
  one.num_examples = 1;
  float a[2] = {1, 2}, b[1] = {5};
  ASSERT_TRUE(m.AccumulateFit({{a, 0, 2}}, one).ok());
  EXPECT_EQ(m.AccumulateFit({{b, 0, 1}}, one).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(m.AccumulateFit({{a, 1, 2}}, one).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(m.accepted(), 1u);
  EXPECT_EQ(*m.FinishFit(nullptr), (std::vector<float>{1, 2}));
}

// Reddi et al. 2021, Algorithm 2, written out for one coordinate.
struct Reference {
  std::string kind;
  double eta, b1, b2, tau, m = 0, v;
  Reference(std::string k, double e, double beta1, double beta2, double t)
      : kind(std::move(k)), eta(e), b1(beta1), b2(beta2), tau(t), v(t * t) {}
  double Step(double x, double d) {
    m = b1 * m + (1 - b1) * d;
    if (kind == "adagrad") v = v + d * d;
    if (kind == "adam") v = b2 * v + (1 - b2) * d * d;
    if (kind == "yogi") v = v - (1 - b2) * d * d * ((v - d * d) > 0 ? 1 : ((v - d * d) < 0 ? -1 : 0));
    return x + eta * m / (std::sqrt(v) + tau);
  }
};

TEST(ServerOptimizer, AdaptiveOptimizersMatchTheFormulasOverSeveralRounds) {
  const std::vector<std::vector<float>> deltas{{0.5f, -0.2f, 0.0f}, {0.1f, -0.3f, 0.05f},
                                               {-0.4f, 0.2f, 0.0f}};
  for (const char* kind : {"adagrad", "adam", "yogi"}) {
    ServerOptimizer opt({kind, 0.05, 0.9, 0.99, 1e-3});
    std::vector<float> x{1.0f, 2.0f, -1.0f};
    std::vector<Reference> ref(3, Reference(kind, 0.05, 0.9, 0.99, 1e-3));
    std::vector<double> expect{1.0, 2.0, -1.0};
    for (const auto& d : deltas) {
      opt.Apply(&x, d);
      for (size_t i = 0; i < 3; ++i) expect[i] = ref[i].Step(expect[i], d[i]);
      for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(x[i], expect[i], 1e-5) << kind << " " << i;
    }
  }
  ServerOptimizer sgd({"sgd", 1.0, 0.9, 0.99, 1e-3});
  std::vector<float> x{1.0f, 2.0f};
  sgd.Apply(&x, {0.5f, -1.0f});
  EXPECT_EQ(x, (std::vector<float>{1.5f, 1.0f})) << "server lr 1 is plain FedAvg";
}

TEST(ServerOptimizer, StrategyNamesPickTheirOptimizerAndDefaults) {
  StrategyParams p;
  EXPECT_EQ(ServerOptimizerFor(p).kind, "sgd");
  EXPECT_EQ(ServerOptimizerFor(p).learning_rate, 1.0);
  p.name = "fedyogi";
  EXPECT_EQ(ServerOptimizerFor(p).kind, "yogi");
  EXPECT_EQ(ServerOptimizerFor(p).learning_rate, 0.01);
  p.server_learning_rate = 0.3;
  EXPECT_EQ(ServerOptimizerFor(p).learning_rate, 0.3);
  p.name = "fedadam";
  EXPECT_EQ(ServerOptimizerFor(p).kind, "adam");
  p.name = "fedadagrad";
  EXPECT_EQ(ServerOptimizerFor(p).kind, "adagrad");
}

constexpr char kJob[] = R"(name: j
dataset: d
model: {type: mlp, task: classification, input_dim: 4, output_dim: 2}
train: {optimizer: sgd, learning_rate: 0.1}
rounds: 2
min_clients: 7
)";

TEST(StrategySpec, ValidCombinationsParseAndImpossibleOnesNameTheProblem) {
  auto ok = [](const std::string& extra) {
    auto s = ParseJobSpecYaml(std::string(kJob) + extra, "job.yaml");
    EXPECT_TRUE(s.ok()) << extra << ": " << s.status().message();
    return s.ok() ? *s : v1::JobSpec();
  };
  ok("strategy: {name: fedadam, server_learning_rate: 0.02}\n");
  ok("strategy: {name: fedyogi}\n");
  v1::JobSpec prox = ok("strategy: {name: fedprox, mu: 0.1}\n");
  EXPECT_FLOAT_EQ(prox.train().proximal_mu(), 0.1f) << "clients learn mu from the TrainSpec";
  ok("strategy: {name: median}\nsecure_aggregation: {enabled: false}\n");
  ok("strategy: {name: krum, byzantine: 2}\nsecure_aggregation: {enabled: false}\n");

  struct Case {
    std::string extra, expect;
  };
  for (const Case& c : std::vector<Case>{
           {"strategy: {name: median}\n", "needs every update on its own"},
           {"strategy: {name: krum}\n", "secure_aggregation: {enabled: false}"},
           {"strategy: {name: fedsgd}\n", "unknown strategy 'fedsgd'"},
           {"strategy: {name: fedprox}\n", "fedprox needs mu > 0"},
           {"strategy: {name: fedavg, mu: 0.1}\n", "mu is for fedprox only"},
           {"strategy: {name: fedadam, beta1: 1.5}\n", "beta1 and beta2"},
           // Explicit zeros are values, not "the default": tau 0 is out of range.
           {"strategy: {name: fedadam, tau: 0}\n", "tau must be in (0, 1]"},
           {"strategy: {name: fedadam, server_learning_rate: 0}\n", "server_learning_rate"},
           {"strategy: {name: multikrum, krum_select: 0}\nsecure_aggregation: {enabled: false}\n",
            "krum_select must be >= 1"},
           {"strategy: {name: krum, krum_select: 3}\nsecure_aggregation: {enabled: false}\n",
            "is for multikrum"},
           {"strategy: {name: fedavg, beta1: 0.5}\n", "beta1 is for fedadam"},
           {"strategy: {name: fedavg, trim_fraction: 0.2}\n", "trim_fraction is for trimmed_mean"},
           {"strategy: {name: median, byzantine: 1}\nsecure_aggregation: {enabled: false}\n",
            "byzantine is for krum"},
           {"strategy: {name: fedavg, krum_select: 1}\n", "krum_select is for krum"},
           {"strategy: {name: trimmed_mean, trim_fraction: 0.6}\nsecure_aggregation: {enabled: "
            "false}\n",
            "trim_fraction"},
           {"strategy: {name: krum, byzantine: 3}\nsecure_aggregation: {enabled: false}\n",
            "min_clients >= 9"},
           {"strategy: {name: fedadam, server_learning_rate: -1}\n", "server_learning_rate"},
           {"strategy: {name: fedadam, momentum: 0.9}\n", "unknown key 'strategy.momentum'"},
       }) {
    auto s = ParseJobSpecYaml(std::string(kJob) + c.extra, "job.yaml");
    ASSERT_FALSE(s.ok()) << c.extra;
    EXPECT_NE(s.status().message().find(c.expect), std::string::npos)
        << c.extra << " -> " << s.status().message();
  }
}

// A value the user sets is used as set, zero included; only an absent key takes the default.
// (Before field presence, beta1: 0, trim_fraction: 0 and byzantine: 0 became 0.9, 0.1 and 1.)
TEST(StrategySpec, ExplicitZerosAreKeptNotReplacedByDefaults) {
  auto parse = [](const std::string& extra) {
    auto s = ParseJobSpecYaml(std::string(kJob) + extra, "job.yaml");
    EXPECT_TRUE(s.ok()) << extra << ": " << (s.ok() ? "" : s.status().message());
    // Through the wire format too (the spec travels from fleetctl and is stored serialized).
    v1::JobSpec copy;
    EXPECT_TRUE(copy.ParseFromString(s.ok() ? s->SerializeAsString() : std::string()));
    return StrategyParamsOf(copy.strategy());
  };
  StrategyParams adam = parse("strategy: {name: fedadam, beta1: 0, beta2: 0}\n");
  EXPECT_EQ(adam.beta1, 0.0);
  EXPECT_EQ(adam.beta2, 0.0);
  EXPECT_EQ(ServerOptimizerFor(adam).beta1, 0.0);
  StrategyParams trim = parse(
      "strategy: {name: trimmed_mean, trim_fraction: 0}\nsecure_aggregation: {enabled: "
      "false}\n");
  EXPECT_EQ(trim.trim_fraction, 0.0);
  StrategyParams krum =
      parse("strategy: {name: krum, byzantine: 0}\nsecure_aggregation: {enabled: false}\n");
  EXPECT_EQ(krum.byzantine, 0u);

  // Absent keys: the documented defaults.
  StrategyParams defaults = parse("strategy: {name: fedadam}\n");
  EXPECT_DOUBLE_EQ(defaults.beta1, 0.9);
  EXPECT_DOUBLE_EQ(defaults.beta2, 0.99);
  EXPECT_DOUBLE_EQ(defaults.tau, 1e-3);
  EXPECT_FALSE(defaults.server_learning_rate.has_value());
  EXPECT_DOUBLE_EQ(ServerOptimizerFor(defaults).learning_rate, 0.01);
  EXPECT_DOUBLE_EQ(
      parse("strategy: {name: trimmed_mean}\nsecure_aggregation: {enabled: false}\n").trim_fraction,
      0.1);
  EXPECT_EQ(parse("strategy: {name: krum}\nsecure_aggregation: {enabled: false}\n").byzantine, 1u);
}

}  // namespace
}  // namespace fleet
