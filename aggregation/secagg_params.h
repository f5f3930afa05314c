// SecAgg+ graph parameters: how many neighbours k each client shares its secrets with, and how
// many of them (t) must help to reconstruct. Derived from the number of clients n, the assumed
// fraction of corrupt clients and the expected dropout rate, following the analysis of Bell et
// al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead" (CCS 2020), sec. 4:
//
//  - security (sigma = 40): with probability >= 1 - 2^-40 no client has t corrupt holders of its
//    shares, and the graph of honest survivors stays connected;
//  - correctness (eta = 30): with probability >= 1 - 2^-30 every client keeps t live holders.
//
// Each client's shares go to its k neighbours and itself (k + 1 holders). When no sparse k < n-1
// qualifies (small n), the graph is complete (the original Bonawitz et al. protocol).
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "proto/secagg.pb.h"

namespace fleet {

struct SecAggThreatModel {
  double corrupt_fraction = 0.05;   // clients that may collude with the server
  double dropout_fraction = 0.05;   // clients expected to drop out during a round
  uint32_t neighbours = 0;          // k override (0: derive); >= n-1 means complete graph
  uint32_t threshold = 0;           // t override (0: derive)
};

struct SecAggGraphParams {
  uint32_t n = 0;
  uint32_t k = 0;                   // neighbours per client (n - 1 when complete)
  uint32_t t = 0;                   // holders needed to reconstruct, out of k + 1
  bool complete = false;
  std::string ToString() const;
};

constexpr double kSecAggSecurityBits = 40;
// With two clients each could subtract its own update from the sum and learn the other's.
constexpr uint32_t kSecAggMinClients = 3;
constexpr double kSecAggCorrectnessBits = 30;

// The parameters for n clients, or an error that says which requirement fails (e.g. a
// threshold that corrupt neighbours could reach, or an infeasible corrupt + dropout rate).
StatusOr<SecAggGraphParams> ChooseGraphParams(uint32_t n, const SecAggThreatModel& threat);

// Validates the fractions and overrides without a client count (job submission time).
Status ValidateThreatModel(const SecAggThreatModel& threat);

// The threat model as the signed task carries it (SecAggTaskConfig fields 9-12), both ways: the
// coordinator writes the job's, each client reads it back and derives (k, t) itself.
void SetThreatModel(const SecAggThreatModel& threat, v1::SecAggTaskConfig* config);
SecAggThreatModel ThreatModelOf(const v1::SecAggTaskConfig& config);

}  // namespace fleet
