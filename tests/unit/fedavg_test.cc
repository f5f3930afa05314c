// FedAvg against an independent computation, streaming accumulation, and selection.
#include <gtest/gtest.h>

#include <random>

#include "aggregation/fedavg.h"

namespace fleet {
namespace {

TEST(FedAvg, WeightedMeanMatchesIndependentComputation) {
  const size_t d = 1000, clients = 7;
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0, 3);
  std::vector<std::vector<float>> updates(clients, std::vector<float>(d));
  std::vector<uint64_t> counts;
  for (auto& u : updates) {
    for (auto& x : u) x = dist(rng);
    counts.push_back(1 + rng() % 500);
  }
  FedAvg avg;
  avg.BeginRound(std::vector<float>(d, 0));
  for (size_t c = 0; c < clients; ++c) {
    // Split each update into two spans to exercise offsets.
    std::vector<ParamSpan> spans{{updates[c].data(), 0, 300},
                                 {updates[c].data() + 300, 300, d - 300}};
    FitMetrics m;
    m.num_examples = counts[c];
    m.train_loss = static_cast<double>(c);
    ASSERT_TRUE(avg.AccumulateFit(spans, m).ok());
  }
  FitMetrics summary;
  auto result = avg.FinishFit(&summary);
  ASSERT_TRUE(result.ok());
  double total = 0, loss = 0;
  for (size_t c = 0; c < clients; ++c) {
    total += static_cast<double>(counts[c]);
    loss += static_cast<double>(counts[c]) * static_cast<double>(c);
  }
  for (size_t i = 0; i < d; ++i) {
    long double expect = 0;
    for (size_t c = 0; c < clients; ++c) {
      expect += static_cast<long double>(counts[c]) * updates[c][i];
    }
    expect /= total;
    ASSERT_NEAR((*result)[i], static_cast<double>(expect), 1e-5) << "index " << i;
  }
  EXPECT_NEAR(summary.train_loss, loss / total, 1e-9);
  EXPECT_EQ(summary.num_examples, static_cast<uint64_t>(total));
  EXPECT_EQ(avg.accepted(), clients);
}

TEST(FedAvg, RejectsPartialOrOversizedUpdatesWithoutSideEffects) {
  std::vector<float> ones(10, 1.0f), twos(10, 2.0f);
  FedAvg avg;
  avg.BeginRound(std::vector<float>(10, 0));
  FitMetrics m;
  m.num_examples = 1;
  EXPECT_FALSE(avg.AccumulateFit({{ones.data(), 0, 5}}, m).ok());        // covers 5 of 10
  EXPECT_FALSE(avg.AccumulateFit({{ones.data(), 5, 10}}, m).ok());       // past the end
  FitMetrics zero;
  EXPECT_FALSE(avg.AccumulateFit({{ones.data(), 0, 10}}, zero).ok());    // 0 examples
  ASSERT_TRUE(avg.AccumulateFit({{twos.data(), 0, 10}}, m).ok());
  auto r = avg.FinishFit(nullptr);
  ASSERT_TRUE(r.ok());
  for (float x : *r) EXPECT_FLOAT_EQ(x, 2.0f);  // the rejected updates left no trace
}

TEST(FedAvg, FinishWithoutUpdatesFails) {
  FedAvg avg;
  avg.BeginRound(std::vector<float>(3, 0));
  EXPECT_FALSE(avg.FinishFit(nullptr).ok());
}

TEST(FedAvg, BeginRoundResets) {
  std::vector<float> ones(4, 1.0f), threes(4, 3.0f);
  FedAvg avg;
  FitMetrics m;
  m.num_examples = 5;
  avg.BeginRound(std::vector<float>(4, 0));
  ASSERT_TRUE(avg.AccumulateFit({{ones.data(), 0, 4}}, m).ok());
  avg.BeginRound(std::vector<float>(4, 0));
  ASSERT_TRUE(avg.AccumulateFit({{threes.data(), 0, 4}}, m).ok());
  auto r = avg.FinishFit(nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_FLOAT_EQ((*r)[0], 3.0f);
}

TEST(Strategy, SelectionIsDeterministicAndBounded) {
  FedAvg avg;
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) ids.push_back("d" + std::to_string(i));
  auto a = avg.SelectClients(ids, 3, 5, 42);
  std::vector<std::string> reversed(ids.rbegin(), ids.rend());
  auto b = avg.SelectClients(reversed, 3, 5, 42);
  EXPECT_EQ(a.size(), 5u);
  EXPECT_EQ(a, b);  // independent of candidate order
  EXPECT_NE(a, avg.SelectClients(ids, 4, 5, 42));
  EXPECT_EQ(avg.SelectClients(ids, 1, 50, 1).size(), 20u);
}

TEST(Strategy, AggregateEvaluateWeightsByExamples) {
  FedAvg avg;
  auto r = avg.AggregateEvaluate({{100, 1.0, 0.9}, {300, 2.0, 0.5}});
  EXPECT_EQ(r.num_examples, 400u);
  EXPECT_DOUBLE_EQ(r.accuracy, (90.0 + 150.0) / 400.0);
  EXPECT_DOUBLE_EQ(r.loss, (100.0 + 600.0) / 400.0);
}

TEST(Strategy, UnknownStrategyRefused) {
  EXPECT_TRUE(MakeStrategy(StrategyParams{}).ok());
  StrategyParams unknown;
  unknown.name = "fedsgd";
  EXPECT_EQ(MakeStrategy(unknown).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fleet
