// The control loop with real LibTorch models: batch-1 inference matches the trainer's model,
// models are hot-swapped under load without a missed window, mismatched models are refused,
// and training yields to the loop (SCHED_IDLE thread, pause gate).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sched.h>

#include <atomic>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "client/control_stack.h"
#include "client/control/control_loop.h"
#include "client/control/inference_model.h"
#include "client/trainer.h"
#include "common/model_layout.h"
#include "tests/unit/test_util.h"

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

TEST(InferenceModel, Int8LinearLayersStayCloseToFloat) {
  v1::ModelSpec spec = Mlp(32, 4);
  spec.set_hidden(0, 64);
  ModelLayout layout = *LayoutFor(spec);
  std::vector<float> params = InitialParameters(layout, 21);
  auto f32 = InferenceModel::Create(spec, params, "v", false);
  auto i8 = InferenceModel::Create(spec, params, "v", true);
  ASSERT_TRUE(f32.ok() && i8.ok()) << i8.status().message();
  EXPECT_TRUE((*i8)->int8());
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0, 1);
  int agree = 0;
  double worst = 0;
  for (int r = 0; r < 500; ++r) {
    std::vector<float> x(32);
    for (float& v : x) v = n(rng);
    float a[4], b[4];
    ASSERT_TRUE((*f32)->Run(x.data(), a).ok());
    ASSERT_TRUE((*i8)->Run(x.data(), b).ok());
    for (int k = 0; k < 4; ++k) worst = std::max(worst, static_cast<double>(std::fabs(a[k] - b[k])));
    agree += std::max_element(a, a + 4) - a == std::max_element(b, b + 4) - b;
  }
  EXPECT_LT(worst, 0.05) << "probabilities within 0.05";
  EXPECT_GE(agree, 480) << "argmax agrees on >= 96% of rows";
  v1::ModelSpec cnn = Mlp(32, 4);
  cnn.set_type("cnn1d");
  cnn.set_channels(2);
  cnn.set_kernel_size(3);
  auto refused = InferenceModel::Create(cnn, InitialParameters(*LayoutFor(cnn), 1), "v", true);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("int8 quantization applies to mlp"), std::string::npos);
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

TEST(ControlLoop, AMissedDeadlinePausesTraining) {
  ControlConfig c = LoopConfig();
  c.deadline_ms = 1;
  c.training_pause_ms = 300;
  ControlLoop loop(c, "dev", [](const std::string&, const std::string&) {}, nullptr);
  ASSERT_TRUE(loop.SwapModel(Model(4, 1, "m")).ok());
  loop.Start();
  // A burst far beyond what 1 ms allows: readings late in the queue miss the deadline.
  for (int i = 0; i < 5000; ++i) loop.OnMessage("s", R"({"x": 1, "y": 2})");
  ASSERT_TRUE(fleet::testing::WaitForTrue([&] { return loop.missed_deadlines() > 0; }));
  // A trainer checking the gate between mini-batches now waits.
  auto t0 = std::chrono::steady_clock::now();
  loop.gate().WaitIfPaused();
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(50));
  EXPECT_GE(loop.gate().pauses(), 1u);
  EXPECT_EQ(loop.gate().waits(), 1u);
  loop.Stop();
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

namespace fleet {
namespace {

using control::ControlConfig;

// A replayed CSV ramp -> buffer -> forecaster rows: features are the window, the label is the
// value `horizon` readings later, all through the inference preprocessing.
TEST(ControlStack, ForecastRowsComeFromTheBufferThroughTheSamePreprocessing) {
  fleet::testing::TempDir dir;
  std::string csv = "x,y\n";
  for (int i = 0; i < 40; ++i) csv += std::to_string(i) + "," + std::to_string(100 - i) + "\n";
  ControlConfig c;
  c.model_dataset = "ramp";
  c.train_dataset = "ramp";
  c.outputs = {"x_next"};
  c.schema.fields = {{"x", 0, 1000, true, 1}, {"y", 0, 1000, true, 1}};
  c.preprocess.window = 3;
  c.preprocess.normalize_mean = {0, 100};
  c.preprocess.normalize_std = {10, 10};
  c.forecast_field = "x";
  c.forecast_horizon = 2;
  c.max_rate_hz = 1e6;
  c.replay = control::ReplayOptions{dir.Write("ramp.csv", csv), "ramp", 10000, false};
  c.buffer = control::BufferOptions{};
  c.buffer->path = dir.path() + "/samples.db";
  c.buffer->commit_interval_ms = 5;
  auto stack = ControlStack::Start(c, "dev");
  ASSERT_TRUE(stack.ok()) << stack.status().message();
  ASSERT_TRUE(fleet::testing::WaitForTrue([&] { return (*stack)->loop().readings() == 40; }));
  ControlHooks hooks = (*stack)->Hooks();
  ASSERT_TRUE(hooks.read_buffer);
  StatusOr<Dataset> d = hooks.read_buffer();
  ASSERT_TRUE(d.ok()) << d.status().message();
  // Windows end at readings 2..39; a label needs reading end+2 <= 39.
  ASSERT_EQ(d->rows, 36u);
  ASSERT_EQ(d->cols, 6u);
  EXPECT_EQ(std::vector<float>(d->features.begin(), d->features.begin() + 6),
            (std::vector<float>{0, 0, 0.1f, -0.1f, 0.2f, -0.2f}));
  EXPECT_EQ(d->labels[0], 4.f);  // raw units of x, two readings after the window
  EXPECT_EQ(d->labels[35], 39.f);
}

TEST(ControlStack, AutoencoderAlarmsAboveTheQuantileOfLocalReconstructionErrors) {
  ConfigureTorchThreads(1);
  fleet::testing::TempDir dir;
  // Normal operation: two correlated channels.
  std::string csv = "a,b\n";
  std::mt19937 rng(4);
  // Small values keep tanh in its linear range, so normal reconstruction errors are tiny.
  std::normal_distribution<float> n(0, 0.3f);
  for (int i = 0; i < 400; ++i) {
    float v = n(rng);
    csv += std::to_string(v) + "," + std::to_string(2 * v + 0.05f * n(rng)) + "\n";
  }
  ControlConfig c;
  c.model_dataset = "pump";
  c.train_dataset = "pump";
  c.outputs = {"reconstruction_error"};
  c.schema.fields = {{"a", -100, 100, true, 1}, {"b", -100, 100, true, 1}};
  c.max_rate_hz = 1e6;
  c.anomaly_quantile = 0.99;
  control::RuleSpec alarm;
  alarm.name = "alarm";
  alarm.uses_model = true;
  alarm.when = {{3, control::Condition::kGe, 1}};  // anomaly (outputs 1 + class + confidence)
  alarm.publish = {"pump/alarm", "{}"};
  c.rules.rules.push_back(alarm);
  c.replay = control::ReplayOptions{dir.Write("pump.csv", csv), "pump", 20000, false};
  c.buffer = control::BufferOptions{};
  c.buffer->path = dir.path() + "/samples.db";
  c.buffer->commit_interval_ms = 5;
  auto stack = ControlStack::Start(c, "dev");
  ASSERT_TRUE(stack.ok()) << stack.status().message();
  ASSERT_TRUE(fleet::testing::WaitForTrue([&] { return (*stack)->loop().readings() == 400; }));
  ControlHooks hooks = (*stack)->Hooks();
  StatusOr<Dataset> data = hooks.read_buffer();
  ASSERT_TRUE(data.ok());
  ASSERT_EQ(data->rows, 400u);

  v1::Task task;
  task.set_job_id("ae");
  task.set_round(1);
  task.set_dataset("pump");
  v1::ModelSpec& m = *task.mutable_model();
  m.set_type("mlp");
  m.set_task("autoencoder");
  m.set_input_dim(2);
  m.add_hidden(1);  // the bottleneck learns the correlation
  m.set_output_dim(2);
  m.set_activation("tanh");
  ModelLayout layout = *LayoutFor(m);
  std::vector<float> init = InitialParameters(layout, 2);
  std::vector<TensorView> views;
  for (const TensorSlot& t : layout.tensors) views.push_back({&t, init.data() + t.offset});
  v1::TrainSpec train;
  train.set_local_epochs(60);
  train.set_batch_size(32);
  train.set_learning_rate(0.02f);
  train.set_optimizer("adam");
  StatusOr<TrainResult> trained = TrainLocal(m, train, layout, views, *data, Dataset{}, 1);
  ASSERT_TRUE(trained.ok()) << trained.status().message();
  EXPECT_LT(trained->train_loss, 0.01);

  hooks.on_global_model(task, trained->params);
  ASSERT_NE((*stack)->loop().StatusJson().find("\"model_version\":\"ae/round-1\""),
            std::string::npos);
  const uint64_t before = (*stack)->loop().readings();
  // In pattern (b = 2a): no alarm. Against it (b = -2a): alarm.
  (*stack)->loop().OnMessage("pump", R"({"a": 0.3, "b": 0.6})");
  ASSERT_TRUE(fleet::testing::WaitForTrue([&] { return (*stack)->loop().readings() == before + 1; }));
  EXPECT_NE((*stack)->loop().StatusJson().find("\"commands\":0"), std::string::npos);
  (*stack)->loop().OnMessage("pump", R"({"a": 0.6, "b": -1.2})");
  ASSERT_TRUE(fleet::testing::WaitForTrue([&] { return (*stack)->loop().readings() == before + 2; }));
  EXPECT_NE((*stack)->loop().StatusJson().find("\"commands\":1"), std::string::npos)
      << (*stack)->loop().StatusJson();
}

}  // namespace
}  // namespace fleet
