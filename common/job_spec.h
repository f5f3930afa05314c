// Job specifications: YAML (what admins write) -> v1::JobSpec (what travels and is stored).
// fleetctl parses to report errors against the file; the coordinator re-validates every spec it
// receives because the wire is not trusted.
#pragma once

#include <string>

#include "aggregation/quantize.h"
#include "aggregation/secagg_params.h"
#include "aggregation/strategy.h"
#include "common/status.h"
#include "proto/fleet.pb.h"

namespace fleet {

StatusOr<v1::JobSpec> ParseJobSpecYaml(const std::string& text, const std::string& source);
StatusOr<v1::JobSpec> LoadJobSpecFile(const std::string& path);

// The secure_aggregation block of a spec that does not write one: on, 5% corrupt and 5% dropout
// assumed, k and t derived, clip 1, 16-bit values, weights up to 1000, 30 s per stage.
v1::SecureAggregationSpec SecureAggregationDefaults();
// The SecAgg+ threat model a job's spec asks for.
SecAggThreatModel ThreatModelOf(const v1::SecureAggregationSpec& sa);

// Semantic checks (ranges, supported names, min <= target, buildable model).
Status ValidateJobSpec(const v1::JobSpec& spec);
// The most devices one round of `spec` can select (target or max_clients, plus over-selection):
// what secure aggregation sizes its modulus for.
uint32_t MaxRoundSize(const v1::JobSpec& spec);
// The aggregation/ view of a spec's strategy block, defaults filled in.
StrategyParams StrategyParamsOf(const v1::StrategySpec& spec);

}  // namespace fleet
