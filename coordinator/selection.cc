#include "coordinator/selection.h"

#include <algorithm>
#include <cmath>

#include "common/job_spec.h"

namespace fleet {

std::string IneligibleReason(const v1::DeviceStatus& d, const v1::JobSpec& spec, bool training) {
  const v1::DatasetInfo* data = nullptr;
  for (const auto& ds : d.datasets()) {
    if (ds.name() == spec.dataset()) data = &ds;
  }
  if (data == nullptr) return "no such dataset";
  const uint64_t examples = training ? data->train_examples() : data->eval_examples();
  if (examples == 0) return training ? "no training data" : "no evaluation data";
  if (!training) return "";  // evaluation is cheap: only the data matters
  const v1::SelectionSpec& s = spec.selection();
  const v1::Eligibility& e = d.eligibility();
  if (examples < s.min_examples()) return "too few examples";
  for (const auto& [key, value] : s.labels()) {
    auto it = d.labels().find(key);
    if (it == d.labels().end() || it->second != value) return "labels do not match";
  }
  if (s.require_power() && !e.on_power()) return "not on power";
  if (s.min_battery_percent() > 0 && !e.on_power() && e.battery_percent() < s.min_battery_percent()) {
    return "battery low";
  }
  if (s.require_idle() && !e.idle()) return "not idle";
  if (s.max_cpu_load() > 0 && e.cpu_load() > s.max_cpu_load()) return "CPU busy";
  if (s.min_free_memory_mb() > 0 && e.free_memory_mb() < s.min_free_memory_mb()) {
    return "low memory";
  }
  return "";
}

std::string RevealedReason(const std::string& sum) {
  return "excluded: their updates are in a revealed sum over this model (" + sum + ")";
}

RoundPlan PlanRound(const v1::JobSpec& spec, const std::string& job_id, uint32_t round,
                    const std::vector<v1::DeviceStatus>& devices,
                    const std::map<std::string, uint32_t>& last_round, uint32_t competing_jobs,
                    const RevealedExclusions& revealed) {
  RoundPlan plan;
  const v1::SelectionSpec& s = spec.selection();
  for (const v1::DeviceStatus& d : devices) {
    if (!d.online() || d.revoked()) continue;
    std::string why = IneligibleReason(d, spec, /*training=*/true);
    if (why == "no such dataset") continue;
    plan.matching++;
    // Counted before any passing reason: this one holds for as long as the model does.
    auto sum = revealed.find(d.id());
    if (sum != revealed.end()) why = RevealedReason(sum->second);
    if (why.empty() && !d.reserved_by().empty() && d.reserved_by() != job_id) {
      why = "in another job's round";
    }
    if (why.empty() && s.cooldown_rounds() > 0) {
      auto it = last_round.find(d.id());
      if (it != last_round.end() && round - it->second <= s.cooldown_rounds()) why = "cooling down";
    }
    if (why.empty()) {
      plan.candidates.push_back(d.id());
    } else {
      plan.excluded[why]++;
    }
  }
  const auto available = static_cast<uint32_t>(plan.candidates.size());
  uint32_t target = spec.target_clients();
  if (s.fraction() > 0) {
    target = static_cast<uint32_t>(std::ceil(s.fraction() * available));
    if (s.max_clients() > 0) target = std::min(target, s.max_clients());
  }
  // Fair share: with several jobs after the same devices, none takes more than its part of them
  // (but always min_clients, or it could never run).
  if (competing_jobs > 1) {
    const auto share = static_cast<uint32_t>(
        std::ceil(static_cast<double>(plan.matching) / competing_jobs));
    target = std::min(target, share);
  }
  target = std::max(target, spec.min_clients());
  if (available < spec.min_clients()) {
    std::string why = std::to_string(available) + " of min " + std::to_string(spec.min_clients()) +
                      " devices eligible (" + std::to_string(plan.matching) +
                      " online with dataset '" + spec.dataset() + "'";
    for (const auto& [reason, n] : plan.excluded) why += "; " + std::to_string(n) + " " + reason;
    plan.waiting_for = why + ")";
    return plan;
  }
  plan.target = std::min(target, available);
  const double over = std::max(0.0f, s.over_selection());
  plan.select = std::min({available, static_cast<uint32_t>(std::ceil(plan.target * (1 + over))),
                          MaxRoundSize(spec)});
  return plan;
}

}  // namespace fleet
