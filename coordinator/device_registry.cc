#include "coordinator/device_registry.h"

#include "common/clock.h"

namespace fleet {

DeviceRegistry::DeviceRegistry(std::chrono::milliseconds offline_after)
    : offline_after_(offline_after) {}

bool DeviceRegistry::OnlineLocked(const Record& r, Clock::time_point now) const {
  return !r.status.revoked() && (r.polling > 0 || now - r.last_seen <= offline_after_);
}

void DeviceRegistry::Revoke(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = devices_.find(id);
  if (it == devices_.end()) return;
  it->second.status.set_revoked(true);
  it->second.status.set_online(false);
  cv_.notify_all();
}

v1::DeviceStatus DeviceRegistry::Join(const v1::JoinRequest& request) {
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
  r.last_seen = Clock::now();
  return r.status;
}

std::string DeviceRegistry::SigningKey(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = devices_.find(id);
  return it == devices_.end() ? std::string() : it->second.signing_key;
}

bool DeviceRegistry::Touch(const std::string& id, bool busy, const v1::Eligibility* eligibility) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = devices_.find(id);
  if (it == devices_.end() || it->second.last_seen == Clock::time_point()) return false;
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

bool DeviceRegistry::IsKnown(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = devices_.find(id);
  return it != devices_.end() && it->second.last_seen != Clock::time_point();
}

bool DeviceRegistry::IsOnline(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = devices_.find(id);
  return it != devices_.end() && OnlineLocked(it->second, Clock::now());
}

std::vector<std::string> DeviceRegistry::Candidates(const std::string& dataset,
                                                    bool training) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  auto now = Clock::now();
  for (const auto& [id, r] : devices_) {
    if (!r.reserved_by.empty() || !OnlineLocked(r, now)) continue;
    for (const auto& d : r.status.datasets()) {
      if (d.name() == dataset && (training ? d.train_examples() : d.eval_examples()) > 0) {
        out.push_back(id);
        break;
      }
    }
  }
  return out;
}

bool DeviceRegistry::Reserve(const std::string& id, const std::string& job_id,
                             std::shared_ptr<const v1::Task> task) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = devices_.find(id);
  if (it == devices_.end() || !OnlineLocked(it->second, Clock::now())) return false;
  if (!it->second.reserved_by.empty() && it->second.reserved_by != job_id) return false;
  it->second.reserved_by = job_id;
  it->second.pending = std::move(task);
  cv_.notify_all();
  return true;
}

void DeviceRegistry::Release(const std::string& id, const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = devices_.find(id);
  if (it == devices_.end() || it->second.reserved_by != job_id) return;
  it->second.reserved_by.clear();
  it->second.pending.reset();
}

std::shared_ptr<const v1::Task> DeviceRegistry::WaitForTask(const std::string& id,
                                                            std::chrono::milliseconds max_wait) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = devices_.find(id);
  if (it == devices_.end()) return nullptr;
  Record& r = it->second;  // std::map nodes are stable; records are never erased
  r.polling++;
  r.last_seen = Clock::now();
  uint64_t generation = wake_generation_;
  cv_.wait_for(lock, max_wait, [&] { return r.pending != nullptr || wake_generation_ != generation; });
  r.polling--;
  r.last_seen = Clock::now();
  r.status.set_last_seen_unix_ms(UnixMillis());
  return std::move(r.pending);
}

void DeviceRegistry::WakeAll() {
  std::lock_guard<std::mutex> lock(mu_);
  wake_generation_++;
  cv_.notify_all();
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
