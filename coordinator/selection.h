// Device selection for a job's rounds (see README "Scheduling"): which devices qualify now
// (dataset, the eligibility they report in heartbeats, labels, cooldown, other jobs' rounds) and
// how many a round takes (target or fraction, min/max, over-selection, a fair share when several
// jobs want the same devices). Pure functions over snapshots; thread-compatible.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "proto/fleet.pb.h"

namespace fleet {

// Why `device` cannot take a `training` (or evaluation) task of `spec` now; empty if it can.
// Reasons are short phrases used in counts, e.g. "not on power".
std::string IneligibleReason(const v1::DeviceStatus& device, const v1::JobSpec& spec,
                             bool training);

struct RoundPlan {
  std::vector<std::string> candidates;  // online, eligible, free, out of cooldown
  uint32_t matching = 0;                // online devices holding the dataset (any state)
  std::map<std::string, uint32_t> excluded;  // reason -> devices
  uint32_t target = 0;                  // updates the round closes at
  uint32_t select = 0;                  // devices to select (target plus over-selection)
  // Set when no round can start: what is missing, for JobStatus.waiting_for.
  std::string waiting_for;
};

// Devices whose updates are in a secure sum already revealed over the model the round trains
// from, each with the sum it is in ("round 3 attempt 1"): no further sum over that model may
// include them (docs/security.md, "Secure aggregation").
using RevealedExclusions = std::map<std::string, std::string>;

// Reason counted in RoundPlan::excluded for a device in `revealed`, naming its sum.
std::string RevealedReason(const std::string& sum);

// Plans a round of `spec` for `job_id` over `devices` (DeviceRegistry::List()).
// `last_round[id]` is the last round of this job the device took part in; `competing_jobs` is the
// number of unfinished jobs (this one included) that want devices with this dataset; devices in
// `revealed` are never candidates.
RoundPlan PlanRound(const v1::JobSpec& spec, const std::string& job_id, uint32_t round,
                    const std::vector<v1::DeviceStatus>& devices,
                    const std::map<std::string, uint32_t>& last_round, uint32_t competing_jobs,
                    const RevealedExclusions& revealed = {});

}  // namespace fleet
