#include "coordinator/device_certs.h"

#include "common/log.h"

namespace fleet {

using State = DeviceCertRecord::State;

Status DeviceCertificates::Load() {
  ASSIGN_OR_RETURN(std::vector<DeviceCertRecord> records, store_->LoadDeviceCerts());
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& r : records) records_[r.device_id] = std::move(r);
  return OkStatus();
}

Status DeviceCertificates::SaveLocked(DeviceCertRecord record) {
  RETURN_IF_ERROR(store_->SaveDeviceCert(record));
  std::string id = record.device_id;
  records_[id] = std::move(record);
  return OkStatus();
}

Status DeviceCertificates::SaveCurrentLocked(const std::string& device_id,
                                             const std::string& serial, int64_t not_after,
                                             int64_t now) {
  DeviceCertRecord r;
  r.device_id = device_id;
  r.state = State::kCurrent;
  r.serial = serial;
  r.not_after = not_after;
  r.updated_unix = now;
  return SaveLocked(std::move(r));
}

Status DeviceCertificates::CheckCurrent(const std::string& device_id, const std::string& serial,
                                        int64_t not_after, int64_t now) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = records_.find(device_id);
  if (it != records_.end() && it->second.state == State::kCurrent) {
    if (it->second.serial == serial) return OkStatus();
    return Unauthenticated("certificate " + serial + " of '" + device_id +
                           "' is no longer this device's certificate (a renewal or enrollment "
                           "replaced it with " +
                           it->second.serial +
                           "); only the newest certificate of a device id is accepted");
  }
  if (it != records_.end() && it->second.state == State::kReset) {
    return Unauthenticated("certificate " + serial + " of '" + device_id +
                           "' was retired by `fleetctl device reset`; the device must enroll "
                           "again with a bootstrap token");
  }
  // Issued before certificates were recorded: the first one seen becomes the current one.
  Status saved = SaveCurrentLocked(device_id, serial, not_after, now);
  if (!saved.ok()) {
    return Unavailable("cannot record the certificate of device '" + device_id +
                       "': " + saved.message());
  }
  FLEET_LOG(Info) << "device " << device_id << ": certificate " << serial
                  << " (issued before certificates were recorded) is now its current one";
  return OkStatus();
}

Status DeviceCertificates::MayEnrollLocked(const std::string& device_id, int64_t now) const {
  auto it = records_.find(device_id);
  if (it == records_.end()) return OkStatus();
  const DeviceCertRecord& r = it->second;
  const std::string reset_hint =
      "; to re-provision a lost or wiped device an admin runs "
      "`fleetctl device reset " +
      device_id +
      "` first (a device that still has its certificate renews "
      "it instead of enrolling)";
  switch (r.state) {
    case State::kReset:
      return OkStatus();
    case State::kLegacy:
      return FailedPrecondition("device '" + device_id +
                                "' may still hold a certificate issued before this coordinator "
                                "recorded certificates" +
                                reset_hint);
    case State::kCurrent:
      if (now >= r.not_after) return OkStatus();
      return FailedPrecondition("device '" + device_id + "' already has a valid certificate (" +
                                r.serial + ", until unix " + std::to_string(r.not_after) +
                                "): use Renew" + reset_hint);
  }
  return OkStatus();
}

Status DeviceCertificates::MayEnroll(const std::string& device_id, int64_t now) const {
  std::lock_guard<std::mutex> lock(mu_);
  return MayEnrollLocked(device_id, now);
}

StatusOr<DeviceCertificates::Previous> DeviceCertificates::Install(const std::string& device_id,
                                                                   const std::string& serial,
                                                                   int64_t not_after, int64_t now,
                                                                   const std::string& renewing) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = records_.find(device_id);
  Previous previous;
  if (it != records_.end()) previous = it->second;
  if (renewing.empty()) {
    RETURN_IF_ERROR(MayEnrollLocked(device_id, now));
  } else if (!previous || previous->state != State::kCurrent || previous->serial != renewing) {
    return FailedPrecondition("certificate " + renewing + " of '" + device_id +
                              "' stopped being current while it was being renewed");
  }
  RETURN_IF_ERROR(SaveCurrentLocked(device_id, serial, not_after, now));
  return previous;
}

Status DeviceCertificates::Record(const std::string& device_id, const std::string& serial,
                                  int64_t not_after, int64_t now, Previous* previous) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = records_.find(device_id);
  previous->reset();
  if (it != records_.end()) *previous = it->second;
  return SaveCurrentLocked(device_id, serial, not_after, now);
}

Status DeviceCertificates::Restore(const std::string& device_id, const Previous& previous) {
  std::lock_guard<std::mutex> lock(mu_);
  if (previous) return SaveLocked(*previous);
  RETURN_IF_ERROR(store_->DeleteDeviceCert(device_id));
  records_.erase(device_id);
  return OkStatus();
}

Status DeviceCertificates::Reset(const std::string& device_id, int64_t now, Previous* previous) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = records_.find(device_id);
  previous->reset();
  if (it != records_.end()) *previous = it->second;
  DeviceCertRecord r;
  r.device_id = device_id;
  r.state = State::kReset;
  r.updated_unix = now;
  return SaveLocked(std::move(r));
}

std::optional<DeviceCertRecord> DeviceCertificates::Get(const std::string& device_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = records_.find(device_id);
  if (it == records_.end()) return std::nullopt;
  return it->second;
}

}  // namespace fleet
