#include "client/control/control_loop.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>

#include "common/clock.h"
#include "common/log.h"

namespace fleet::control {

namespace {

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

uint64_t Us(int64_t ns) { return ns > 0 ? static_cast<uint64_t>(ns / 1000) : 0; }

constexpr int64_t kDropLogIntervalNs = 10'000'000'000;  // one line per reason per 10 s

}  // namespace

ControlLoop::ControlLoop(ControlConfig config, std::string device_id, PublishFn publish,
                         SampleBuffer* buffer)
    : config_(std::move(config)),
      device_id_(std::move(device_id)),
      publish_(std::move(publish)),
      buffer_(buffer),
      pre_(config_.preprocess, config_.schema.width()),
      rules_(config_.rules, device_id_) {
  row_.resize(pre_.output_dim());
  const size_t fields = config_.schema.width();
  signals_.assign(config_.outputs.size() + 3 + fields, 0.f);
  commands_.reserve(8);
}

ControlLoop::~ControlLoop() { Stop(); }

void ControlLoop::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!stop_) return;
  stop_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void ControlLoop::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  gate_.Release();
}

Status ControlLoop::SwapModel(std::shared_ptr<InferenceModel> model) {
  if (model->input_dim() != pre_.output_dim()) {
    return FailedPrecondition("model " + model->version() + " expects " +
                              std::to_string(model->input_dim()) +
                              " inputs; control.preprocess produces " +
                              std::to_string(pre_.output_dim()));
  }
  if (model->output_dim() != config_.outputs.size()) {
    return FailedPrecondition("model " + model->version() + " has " +
                              std::to_string(model->output_dim()) + " outputs; control.outputs names " +
                              std::to_string(config_.outputs.size()));
  }
  {
    std::lock_guard<std::mutex> lock(version_mu_);
    version_ = model->version();
  }
  {
    std::lock_guard<std::mutex> lock(model_mu_);
    model_ = std::move(model);
  }
  has_model_ = true;
  ++model_swaps_;
  return OkStatus();
}

void ControlLoop::Drop(std::string_view topic, const Rejection& why) {
  const size_t r = static_cast<size_t>(why.reason);
  drops_[r].fetch_add(1, std::memory_order_relaxed);
  const int64_t now = SteadyNs();
  uint64_t suppressed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    DropLog& l = drop_log_[r];
    if (l.last_ns != 0 && now - l.last_ns < kDropLogIntervalNs) {
      ++l.suppressed;
      return;
    }
    suppressed = l.suppressed;
    l = DropLog{now, 0};
  }
  FLEET_LOG(Warn) << "control: dropped a message on '" << topic << "': "
                  << DropReasonName(why.reason) << ": " << why.detail
                  << (suppressed ? " (+" + std::to_string(suppressed) +
                                       " more of this kind since the last such line)"
                                 : std::string());
}

void ControlLoop::OnMessage(std::string_view topic, std::string_view payload) {
  const int64_t received = SteadyNs();
  bool flood = false;
  {
    // Token bucket per topic: a flooding sensor cannot starve the others or the loop.
    std::lock_guard<std::mutex> lock(mu_);
    auto it = rates_.find(topic);
    if (it == rates_.end()) {
      it = rates_.emplace(std::string(topic), TopicRate{config_.max_rate_hz, received}).first;
    }
    TopicRate& t = it->second;
    t.tokens = std::min(config_.max_rate_hz,
                        t.tokens + static_cast<double>(received - t.last_ns) * 1e-9 *
                                       config_.max_rate_hz);
    t.last_ns = received;
    flood = t.tokens < 1;
    if (!flood) t.tokens -= 1;
  }
  if (flood) {
    Drop(topic, Rejection{DropReason::kFlood, "over max_rate_hz"});
    return;
  }
  Reading r;
  Rejection why;
  if (!ParseReading(config_.schema, payload, UnixMillis(), &r, &why)) {
    Drop(topic, why);
    return;
  }
  r.received_steady_ns = received;
  bool overflow = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.size() >= config_.queue) {
      queue_.pop_front();
      overflow = true;
    }
    queue_.push_back(std::move(r));
  }
  cv_.notify_one();
  if (overflow) Drop(topic, Rejection{DropReason::kQueueFull, "control queue full"});
}

void ControlLoop::Loop() {
  auto next_summary = std::chrono::steady_clock::now() +
                      std::chrono::seconds(config_.status_interval_s);
  // The safe default goes out at once when no model is loaded yet.
  if (!has_model_) {
    rules_.EmitDefault(UnixMillis(), &commands_);
    for (const Command& c : commands_) publish_(c.topic, c.payload);
    commands_sent_ += commands_.size();
    commands_.clear();
  }
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait_until(lock, next_summary, [&] { return stop_ || !queue_.empty(); });
    if (stop_) break;
    if (std::chrono::steady_clock::now() >= next_summary) {
      lock.unlock();
      Summarize();
      lock.lock();
      next_summary = std::chrono::steady_clock::now() +
                     std::chrono::seconds(config_.status_interval_s);
      continue;
    }
    Reading r = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    Process(r);
    lock.lock();
  }
}

void ControlLoop::Process(Reading& r) {
  const int64_t t0 = SteadyNs();
  // Counted when fully handled (commands published), on every return path.
  struct CountWhenDone {
    std::atomic<uint64_t>& n;
    ~CountWhenDone() { n.fetch_add(1, std::memory_order_release); }
  } count_when_done{readings_};
  hist_[kQueue].Record(Us(t0 - r.received_steady_ns));
  if (buffer_ != nullptr && !buffer_->Append(r)) {
    Drop("buffer", Rejection{DropReason::kQueueFull, "sample buffer queue full"});
  }
  float label = 0;
  const bool window = pre_.Push(r, row_.data(), &label, &raw_);
  const int64_t t1 = SteadyNs();
  hist_[kPreprocess].Record(Us(t1 - t0));
  if (!window) return;
  windows_.fetch_add(1, std::memory_order_relaxed);

  std::shared_ptr<InferenceModel> model;
  {
    std::lock_guard<std::mutex> lock(model_mu_);
    model = model_;
  }
  const size_t outs = config_.outputs.size();
  std::string version;
  if (model) {
    Status s = model->Run(row_.data(), signals_.data());
    if (s.ok()) {
      version = model->version();
      inferences_.fetch_add(1, std::memory_order_relaxed);
      size_t best = 0;
      for (size_t i = 1; i < outs; ++i) {
        if (signals_[i] > signals_[best]) best = i;
      }
      signals_[outs] = static_cast<float>(best);
      signals_[outs + 1] = signals_[best];
      signals_[outs + 2] = model->autoencoder() && signals_[0] > model->anomaly_threshold();
    } else {
      FLEET_LOG(Error) << "control: inference failed: " << s.message();
    }
  }
  std::copy(raw_.begin(), raw_.end(), signals_.begin() + static_cast<std::ptrdiff_t>(outs + 3));
  const int64_t t2 = SteadyNs();
  hist_[kInference].Record(Us(t2 - t1));

  rules_.Evaluate(signals_, version, r.ts_ms, &commands_);
  for (const Command& c : commands_) publish_(c.topic, c.payload);
  commands_sent_.fetch_add(commands_.size(), std::memory_order_relaxed);
  commands_.clear();
  const int64_t t3 = SteadyNs();
  hist_[kRules].Record(Us(t3 - t2));
  const uint64_t total = Us(t3 - r.received_steady_ns);
  hist_[kTotal].Record(total);
  if (total > uint64_t{config_.deadline_ms} * 1000) {
    missed_.fetch_add(1, std::memory_order_relaxed);
    gate_.PauseFor(std::chrono::milliseconds(config_.training_pause_ms));
  }
}

std::string ControlLoop::StatusJson() const {
  nlohmann::json j;
  j["device"] = device_id_;
  {
    std::lock_guard<std::mutex> lock(version_mu_);
    j["model_version"] = version_;
  }
  j["readings"] = readings_.load();
  j["windows"] = windows_.load();
  j["inferences"] = inferences_.load();
  j["commands"] = commands_sent_.load();
  j["model_swaps"] = model_swaps_.load();
  j["missed_deadlines"] = missed_.load();
  j["deadline_ms"] = config_.deadline_ms;
  j["training_pauses"] = gate_.pauses();
  j["rate_limited_commands"] = rules_.rate_limited();
  nlohmann::json drops = nlohmann::json::object();
  for (size_t i = 0; i < drops_.size(); ++i) {
    drops[DropReasonName(static_cast<DropReason>(i))] = drops_[i].load();
  }
  j["dropped"] = drops;
  static constexpr const char* kNames[] = {"queue", "preprocess", "inference", "rules", "total"};
  nlohmann::json lat = nlohmann::json::object();
  for (int s = 0; s < kStages; ++s) {
    lat[kNames[s]] = {{"p50_us", hist_[s].Percentile(50)},
                      {"p99_us", hist_[s].Percentile(99)},
                      {"max_us", hist_[s].max()}};
  }
  j["latency"] = lat;
  if (buffer_ != nullptr) {
    j["buffer"] = {{"committed", buffer_->committed()},
                   {"stored", buffer_->stored()},
                   {"evicted", buffer_->evicted()}};
  }
  return j.dump();
}

void ControlLoop::Summarize() {
  uint64_t dropped = 0;
  for (const auto& d : drops_) dropped += d.load();
  if (!config_.status_topic.empty()) publish_(config_.status_topic, StatusJson());
  // A quiet device does not repeat the same line.
  const uint64_t seen = readings_.load() + dropped;
  if (seen == last_summary_seen_) return;
  last_summary_seen_ = seen;
  FLEET_LOG(Info) << "control: " << readings_.load() << " readings, " << windows_.load()
                  << " windows, " << dropped << " dropped, " << missed_.load()
                  << " missed deadlines; total latency p50 " << hist_[kTotal].Percentile(50)
                  << " us, p99 " << hist_[kTotal].Percentile(99) << " us (inference p99 "
                  << hist_[kInference].Percentile(99) << " us)";
}

}  // namespace fleet::control
