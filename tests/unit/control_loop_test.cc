// The control loop with real LibTorch models: batch-1 inference matches the trainer's model,
// models are hot-swapped under load without a missed window, mismatched models are refused,
// and training yields to the loop (SCHED_IDLE thread, pause gate).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sched.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "client/control/control_loop.h"
#include "client/control/inference_model.h"
#include "client/trainer.h"
#include "common/model_layout.h"

namespace fleet::control {
namespace {

v1::ModelSpec Mlp(uint32_t in, uint32_t out) {
  v1::ModelSpec m;
  m.set_type("mlp");
  m.set_task("classification");
  m.set_input_dim(in);
  m.add_hidden(16);
  m.set_output_dim(out);
  m.set_activation("relu");
  return m;
}

TEST(InferenceModel, AgreesWithTheTrainersPredictions) {
  const v1::ModelSpec spec = Mlp(4, 3);
  StatusOr<ModelLayout> layout = LayoutFor(spec);
  ASSERT_TRUE(layout.ok());
  std::vector<float> params = InitialParameters(*layout, 11);
  StatusOr<std::shared_ptr<InferenceModel>> m = InferenceModel::Create(spec, params, "v1");
  ASSERT_TRUE(m.ok()) << m.status().message();
  Dataset d;
  d.rows = 64;
  d.cols = 4;
  for (size_t i = 0; i < d.rows * d.cols; ++i) d.features.push_back(std::sin(0.7f * i) * 3);
  d.labels.assign(d.rows, 0);
  std::vector<TensorView> views;
  for (const TensorSlot& t : layout->tensors) views.push_back({&t, params.data() + t.offset});
  StatusOr<std::vector<int>> expected = PredictClasses(spec, views, d);
  ASSERT_TRUE(expected.ok());
  for (size_t r = 0; r < d.rows; ++r) {
    float out[3];
    ASSERT_TRUE((*m)->Run(&d.features[r * 4], out).ok());
    EXPECT_NEAR(out[0] + out[1] + out[2], 1.0, 1e-5) << "softmax probabilities";
    int best = static_cast<int>(std::max_element(out, out + 3) - out);
    EXPECT_EQ(best, (*expected)[r]) << "row " << r;
  }
  EXPECT_FALSE(InferenceModel::Create(spec, std::vector<float>(5), "bad").ok());
}

ControlConfig LoopConfig() {
  ControlConfig c;
  c.model_dataset = "d";
  c.outputs = {"a", "b"};
  c.schema.fields = {{"x", -100, 100, true, 1}, {"y", -100, 100, true, 1}};
  c.preprocess.window = 2;  // raw window of 2 readings x 2 fields -> 4 inputs
  c.queue = 100000;
  c.max_rate_hz = 1e9;
  c.deadline_ms = 1000;
  // Fires on one window and releases on the next: every other window yields a command that
  // names the model version it used.
  RuleSpec r;
  r.name = "toggle";
  r.when = {{3, Condition::kGe, 0}};          // confidence >= 0: always
  r.release_when = {{3, Condition::kGe, 0}};  // and released on the next window
  r.publish = {"out", "{}"};
  c.rules.rules.push_back(r);
  c.rules.default_action = Action{"out", R"({"safe":true})"};
  return c;
}

std::shared_ptr<InferenceModel> Model(uint32_t in, uint64_t seed, const std::string& version) {
  v1::ModelSpec spec = Mlp(in, 2);
  StatusOr<ModelLayout> layout = LayoutFor(spec);
  auto m = InferenceModel::Create(spec, InitialParameters(*layout, seed), version);
  EXPECT_TRUE(m.ok());
  return *m;
}

TEST(ControlLoop, SafeDefaultFirstThenHotSwapUnderLoadMissesNoWindow) {
  std::mutex mu;
  std::vector<std::string> commands;
  ControlLoop loop(LoopConfig(), "dev", [&](const std::string&, const std::string& payload) {
    std::lock_guard<std::mutex> lock(mu);
    commands.push_back(payload);
  }, nullptr);
  loop.Start();
  // Nothing loaded yet: the safe default goes out.
  for (int i = 0; i < 200 && loop.StatusJson().find("\"commands\":1") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(loop.SwapModel(Model(4, 1, "m/round-1")).ok());
  std::atomic<bool> done{false};
  std::thread swapper([&] {
    for (int i = 0; !done; ++i) {
      // Built off the loop thread, swapped in whole.
      EXPECT_TRUE(loop.SwapModel(Model(4, i % 2 ? 2 : 1, i % 2 ? "m/round-2" : "m/round-1")).ok());
    }
  });
  constexpr int kReadings = 20000;
  for (int i = 0; i < kReadings; ++i) {
    loop.OnMessage("s", R"({"x": 1.5, "y": -2})");
  }
  for (int i = 0; i < 2000 && loop.readings() < kReadings; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  done = true;
  swapper.join();
  loop.Stop();
  EXPECT_EQ(loop.readings(), static_cast<uint64_t>(kReadings));
  EXPECT_EQ(loop.windows(), static_cast<uint64_t>(kReadings - 1));
  EXPECT_EQ(loop.inferences(), loop.windows()) << "every window ran a model";
  EXPECT_EQ(loop.dropped(DropReason::kQueueFull), 0u);
  std::set<std::string> versions;
  ASSERT_GT(commands.size(), 2u);
  EXPECT_NE(commands[0].find("\"safe\":true"), std::string::npos) << commands[0];
  for (size_t i = 1; i < commands.size(); ++i) {
    versions.insert(nlohmann::json::parse(commands[i])["model_version"].get<std::string>());
  }
  EXPECT_EQ(versions, (std::set<std::string>{"m/round-1", "m/round-2"}));
  EXPECT_GT(loop.latency(ControlLoop::kInference).count(), 0u);
}

TEST(ControlLoop, RefusesAModelThatDoesNotFitAndKeepsTheCurrentOne) {
  ControlLoop loop(LoopConfig(), "dev", [](const std::string&, const std::string&) {}, nullptr);
  ASSERT_TRUE(loop.SwapModel(Model(4, 1, "good")).ok());
  Status s = loop.SwapModel(Model(3, 1, "wrong-input"));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("expects 3 inputs; control.preprocess produces 4"), std::string::npos)
      << s.message();
  EXPECT_NE(loop.StatusJson().find("\"model_version\":\"good\""), std::string::npos);
}

TEST(ControlLoop, BadMessagesAreCountedByReasonAndFloodsAreCut) {
  ControlConfig c = LoopConfig();
  c.max_rate_hz = 50;
  ControlLoop loop(c, "dev", [](const std::string&, const std::string&) {}, nullptr);
  loop.Start();
  loop.OnMessage("s", "not json");
  loop.OnMessage("s", R"({"x": 1})");
  loop.OnMessage("s", R"({"x": 1, "y": 2, "z": 3})");
  loop.OnMessage("s", R"({"x": 1, "y": "2"})");
  loop.OnMessage("s", R"({"x": 1, "y": 200})");
  for (int i = 0; i < 200; ++i) loop.OnMessage("flood", R"({"x": 1, "y": 2})");
  loop.Stop();
  EXPECT_EQ(loop.dropped(DropReason::kNotJson), 1u);
  EXPECT_EQ(loop.dropped(DropReason::kMissingField), 1u);
  EXPECT_EQ(loop.dropped(DropReason::kExtraField), 1u);
  EXPECT_EQ(loop.dropped(DropReason::kWrongType), 1u);
  EXPECT_EQ(loop.dropped(DropReason::kOutOfRange), 1u);
  // A burst of 200 at 50/s: about the bucket's 50 pass, the rest are floods.
  EXPECT_GE(loop.dropped(DropReason::kFlood), 140u);
  EXPECT_LE(loop.dropped(DropReason::kFlood), 150u);
}

TEST(TrainingGate, TrainingRunsAtIdlePriorityAndWaitsOutAPause) {
  int policy = -1;
  Status s = RunAtTrainingPriority([&] {
    policy = sched_getscheduler(0);
    return OkStatus();
  });
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(policy, SCHED_IDLE);
  TrainingGate gate;
  auto t0 = std::chrono::steady_clock::now();
  gate.WaitIfPaused();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(50));
  gate.PauseFor(std::chrono::milliseconds(150));
  t0 = std::chrono::steady_clock::now();
  gate.WaitIfPaused();
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(140));
  EXPECT_EQ(gate.pauses(), 1u);
  EXPECT_EQ(gate.waits(), 1u);
}

}  // namespace
}  // namespace fleet::control
