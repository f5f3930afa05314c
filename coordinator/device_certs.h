// The one certificate each device id may use: the serial (and expiry) of the certificate last
// issued to it, recorded durably in the store before the certificate is handed out. A device RPC
// with any other certificate of the id is refused, so a renewal, a re-enrollment or
// `fleetctl device reset` retires the old certificate at once, checked on every call. Enrollment
// is refused while the id has a current certificate that has not expired: a device that has one
// renews, and a lost device is re-provisioned by an admin's reset.
//
// Ids without a record (certificates issued before records were kept: a state database from
// before schema v7, whose migration marks the devices that had joined as kLegacy) adopt the first
// valid certificate they present. A legacy mark also refuses enrollment, because the certificate
// it stands for may still be valid.
//
// Thread-safe (one mutex; store writes happen under it, so two calls cannot both install a
// certificate for one id).
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "common/status.h"
#include "coordinator/store.h"

namespace fleet {

class DeviceCertificates {
 public:
  explicit DeviceCertificates(JobStore* store) : store_(store) {}
  Status Load();

  // A device RPC with certificate `serial` of `device_id`: OK when it is the id's current one
  // (or adopted now, see above); Unauthenticated naming why not.
  Status CheckCurrent(const std::string& device_id, const std::string& serial, int64_t not_after,
                      int64_t now);

  // OK when `device_id` may enroll at `now`; FailedPrecondition saying what to do otherwise.
  Status MayEnroll(const std::string& device_id, int64_t now) const;

  // The record an Install replaced (nullopt: there was none), for Restore.
  using Previous = std::optional<DeviceCertRecord>;
  // Makes `serial` the id's only valid certificate, durably. For an enrollment (`renewing`
  // empty) the id must still pass MayEnroll; for a renewal `renewing` must still be the current
  // serial (the certificate the request came with). FailedPrecondition otherwise.
  StatusOr<Previous> Install(const std::string& device_id, const std::string& serial,
                             int64_t not_after, int64_t now, const std::string& renewing);
  // Makes `serial` the id's current certificate whatever the record held: a coordinator's copy
  // of what its separate CA decided. *previous is what it replaced.
  Status Record(const std::string& device_id, const std::string& serial, int64_t not_after,
                int64_t now, Previous* previous);
  // Puts back what Install replaced (the issue could not complete).
  Status Restore(const std::string& device_id, const Previous& previous);

  // Forgets the current certificate: none is accepted for the id until it enrolls again.
  // Returns the record it replaced (for Restore) in *previous.
  Status Reset(const std::string& device_id, int64_t now, Previous* previous);

  std::optional<DeviceCertRecord> Get(const std::string& device_id) const;

 private:
  Status MayEnrollLocked(const std::string& device_id, int64_t now) const;
  Status SaveLocked(DeviceCertRecord record);
  // Records `serial` as the id's current certificate.
  Status SaveCurrentLocked(const std::string& device_id, const std::string& serial,
                           int64_t not_after, int64_t now);

  JobStore* const store_;
  mutable std::mutex mu_;
  std::map<std::string, DeviceCertRecord> records_;  // by device id; guarded by mu_
};

}  // namespace fleet
