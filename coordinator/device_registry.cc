#include "coordinator/device_registry.h"

#include "common/clock.h"

namespace fleet {

DeviceRegistry::DeviceRegistry(std::chrono::milliseconds offline_after)
    : offline_after_(offline_after) {
  timer_ = std::thread([this] { TimerLoop(); });
}

DeviceRegistry::~DeviceRegistry() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    timer_cv_.notify_all();
  }
  timer_.join();
  WakeAll();
}

bool DeviceRegistry::OnlineLocked(const Record& r, Clock::time_point now) const {
  return !r.status.revoked() && (r.polling > 0 || now - r.last_seen <= offline_after_);
}

void DeviceRegistry::Revoke(const std::string& id) {
  std::vector<Completion> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = devices_.find(id);
    if (it == devices_.end()) return;
    it->second.status.set_revoked(true);
    it->second.status.set_online(false);
    WakeDeviceLocked(id, &done);
  }
  Run(&done);
}

void DeviceRegistry::Disconnect(const std::string& id) {
  std::vector<Completion> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = devices_.find(id);
    if (it == devices_.end()) return;
    Record& r = it->second;
    r.last_seen = Clock::time_point();  // not joined: Touch and FetchTask answer "join first"
    r.signing_key.clear();
    r.certificate.clear();
    r.status.set_online(false);
    WakeDeviceLocked(id, &done);
  }
  Run(&done);
}

v1::DeviceStatus DeviceRegistry::Join(const v1::JoinRequest& request, std::string certificate_der) {
  std::lock_guard<std::mutex> lock(mu_);
  Record& r = devices_[request.device_id()];
  r.status.set_id(request.device_id());
  r.status.set_software_version(request.software_version());
  *r.status.mutable_datasets() = request.datasets();
  *r.status.mutable_labels() = request.labels();
  *r.status.mutable_eligibility() = request.eligibility();
  r.status.set_last_seen_unix_ms(UnixMillis());
  r.status.set_busy(false);
  r.signing_key = request.signing_public_key();
  r.certificate = std::move(certificate_der);
  r.last_seen = Clock::now();
  return r.status;
}

std::string DeviceRegistry::SigningKey(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = devices_.find(id);
  return it == devices_.end() ? std::string() : it->second.signing_key;
}

DeviceRegistry::SecAggIdentity DeviceRegistry::SecAggIdentityOf(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = devices_.find(id);
  if (it == devices_.end()) return {};
  return {it->second.signing_key, it->second.certificate};
}

bool DeviceRegistry::Touch(const std::string& id, bool busy, const v1::Eligibility* eligibility) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = devices_.find(id);
  if (it == devices_.end() || !Joined(it->second)) return false;
  it->second.last_seen = Clock::now();
  it->second.status.set_last_seen_unix_ms(UnixMillis());
  it->second.status.set_busy(busy);
  if (eligibility != nullptr) *it->second.status.mutable_eligibility() = *eligibility;
  return true;
}

void DeviceRegistry::Restore(const std::vector<v1::DeviceStatus>& devices) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& d : devices) {
    Record& r = devices_[d.id()];
    r.status = d;
    r.status.set_online(false);
    r.status.set_busy(false);
    r.status.clear_reserved_by();
    // last_seen stays at the epoch: offline, and Touch/FetchTask answer "join first".
  }
}

bool DeviceRegistry::IsOnline(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = devices_.find(id);
  return it != devices_.end() && OnlineLocked(it->second, Clock::now());
}

bool DeviceRegistry::Reserve(const std::string& id, const std::string& job_id, TaskBytes task) {
  std::vector<Completion> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = devices_.find(id);
    if (it == devices_.end() || !OnlineLocked(it->second, Clock::now())) return false;
    if (!it->second.reserved_by.empty() && it->second.reserved_by != job_id) return false;
    it->second.reserved_by = job_id;
    it->second.pending = std::move(task);
    DeliverLocked(&it->second, &done);
  }
  Run(&done);
  return true;
}

void DeviceRegistry::Release(const std::string& id, const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = devices_.find(id);
  if (it == devices_.end() || it->second.reserved_by != job_id) return;
  it->second.reserved_by.clear();
  it->second.pending.reset();
}

bool DeviceRegistry::Park(const std::string& id, std::chrono::milliseconds max_wait,
                          TaskCallback callback) {
  std::vector<Completion> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = devices_.find(id);
    if (it == devices_.end() || !Joined(it->second)) return false;
    Record& r = it->second;
    const auto now = Clock::now();
    r.last_seen = now;
    r.status.set_last_seen_unix_ms(UnixMillis());
    const uint64_t wid = next_waiter_++;
    const auto deadline = now + max_wait;
    waiters_.emplace(wid, Waiter{id, deadline, std::move(callback)});
    waiters_by_device_.emplace(id, wid);
    r.polling++;
    if (stopping_ || r.status.revoked()) {
      TakeWaiterLocked(wid, nullptr, &done);
    } else {
      const bool earliest = deadlines_.empty() || deadline < deadlines_.begin()->first;
      deadlines_.emplace(deadline, wid);
      if (earliest) timer_cv_.notify_one();
      DeliverLocked(&r, &done);
    }
  }
  Run(&done);
  return true;
}

size_t DeviceRegistry::parked() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiters_.size();
}

void DeviceRegistry::TakeWaiterLocked(uint64_t wid, TaskBytes task,
                                      std::vector<Completion>* out) {
  auto w = waiters_.find(wid);
  if (w == waiters_.end()) return;
  auto range = waiters_by_device_.equal_range(w->second.device);
  for (auto it = range.first; it != range.second; ++it) {
    if (it->second == wid) {
      waiters_by_device_.erase(it);
      break;
    }
  }
  auto dr = deadlines_.equal_range(w->second.deadline);
  for (auto it = dr.first; it != dr.second; ++it) {
    if (it->second == wid) {
      deadlines_.erase(it);
      break;
    }
  }
  auto rec = devices_.find(w->second.device);
  if (rec != devices_.end()) {
    rec->second.polling--;
    rec->second.last_seen = Clock::now();
    rec->second.status.set_last_seen_unix_ms(UnixMillis());
  }
  out->emplace_back(std::move(w->second.done), std::move(task));
  waiters_.erase(w);
}

void DeviceRegistry::DeliverLocked(Record* r, std::vector<Completion>* out) {
  if (r->pending == nullptr) return;
  auto it = waiters_by_device_.find(r->status.id());
  if (it == waiters_by_device_.end()) return;
  TakeWaiterLocked(it->second, std::move(r->pending), out);
}

void DeviceRegistry::WakeDeviceLocked(const std::string& id, std::vector<Completion>* out) {
  for (auto it = waiters_by_device_.find(id); it != waiters_by_device_.end();
       it = waiters_by_device_.find(id)) {
    TakeWaiterLocked(it->second, nullptr, out);
  }
}

void DeviceRegistry::Run(std::vector<Completion>* completions) {
  for (auto& [done, task] : *completions) done(std::move(task));
  completions->clear();
}

void DeviceRegistry::TimerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (deadlines_.empty()) {
      timer_cv_.wait(lock);
      continue;
    }
    const auto next = deadlines_.begin()->first;
    if (Clock::now() < next) {
      timer_cv_.wait_until(lock, next);
      continue;
    }
    std::vector<Completion> done;
    const auto now = Clock::now();
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
      TakeWaiterLocked(deadlines_.begin()->second, nullptr, &done);
    }
    lock.unlock();
    Run(&done);
    lock.lock();
  }
}

void DeviceRegistry::WakeAll() {
  std::vector<Completion> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;  // later polls complete at once: the server is going away
    timer_cv_.notify_all();
    while (!waiters_.empty()) TakeWaiterLocked(waiters_.begin()->first, nullptr, &done);
  }
  Run(&done);
}

std::vector<v1::DeviceStatus> DeviceRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::DeviceStatus> out;
  auto now = Clock::now();
  for (const auto& [id, r] : devices_) {
    v1::DeviceStatus s = r.status;
    s.set_online(OnlineLocked(r, now));
    s.set_reserved_by(r.reserved_by);
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace fleet
