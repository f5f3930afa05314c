#include "coordinator/refusal_log.h"

#include <algorithm>
#include <vector>

#include "common/log.h"

namespace fleet {
namespace {
constexpr size_t kMaxIdsPerRecord = 5;
}  // namespace

RefusalLog::RefusalLog(AuditLog* audit, std::chrono::milliseconds interval, size_t max_pairs)
    : audit_(audit),
      interval_(std::max(interval, std::chrono::milliseconds(1))),
      max_pairs_(std::max<size_t>(max_pairs, 1)),
      thread_([this] { Loop(); }) {}

RefusalLog::~RefusalLog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  Flush();
}

void RefusalLog::Refused(const std::string& reason, const std::string& peer,
                         const std::string& device_id, const std::string& token_id) {
  Key key{reason, peer};
  Pending first;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(key);
    if (it == pending_.end() && pending_.size() >= max_pairs_) {
      key.second = "*";
      it = pending_.find(key);
    }
    if (it != pending_.end()) {
      Pending& p = it->second;
      ++p.count;
      if (!device_id.empty() && p.devices.size() < kMaxIdsPerRecord) p.devices.insert(device_id);
      if (!token_id.empty() && p.tokens.size() < kMaxIdsPerRecord) p.tokens.insert(token_id);
      return;
    }
    Pending& p = pending_[key];
    p.ends = Clock::now() + interval_;
    p.actor = device_id.empty() ? "anonymous" : device_id;  // not parsed yet, or none given
    first = p;
    first.count = 1;
    if (!device_id.empty()) first.devices.insert(device_id);
    if (!token_id.empty()) first.tokens.insert(token_id);
  }
  cv_.notify_all();
  Record(key, first);
}

void RefusalLog::Record(const Key& key, const Pending& p) {
  nlohmann::json fields = {
      {"reason", key.first},
      {"peer", key.second},
      {"count", p.count},
      {"device_ids", std::vector<std::string>(p.devices.begin(), p.devices.end())}};
  if (!p.tokens.empty()) {
    fields["token_ids"] = std::vector<std::string>(p.tokens.begin(), p.tokens.end());
  }
  if (p.count > 1) {
    fields["interval_ms"] = static_cast<int64_t>(interval_.count());
  }
  Status s = audit_->Append("enroll_refused", p.actor, std::move(fields));
  if (!s.ok()) {
    FLEET_LOG(Warn) << "refused enrollment(s) not in the audit log (" << p.count << " x "
                    << key.first << " from " << key.second << "): " << s.message();
  }
}

void RefusalLog::Flush() {
  std::map<Key, Pending> due;
  {
    std::lock_guard<std::mutex> lock(mu_);
    due.swap(pending_);
  }
  for (const auto& [key, p] : due) {
    if (p.count > 0) Record(key, p);
  }
}

void RefusalLog::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (pending_.empty()) {
      cv_.wait(lock);
      continue;
    }
    Clock::time_point next = Clock::time_point::max();
    for (const auto& [key, p] : pending_) next = std::min(next, p.ends);
    if (cv_.wait_until(lock, next) == std::cv_status::no_timeout && !stop_) continue;
    const auto now = Clock::now();
    std::vector<std::pair<Key, Pending>> due;
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.ends <= now) {
        if (it->second.count > 0) due.emplace_back(it->first, std::move(it->second));
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    lock.unlock();
    for (const auto& [key, p] : due) Record(key, p);
    lock.lock();
  }
}

}  // namespace fleet
