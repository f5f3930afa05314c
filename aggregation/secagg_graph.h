// The SecAgg+ communication graph: a Harary graph H(n, k) (each node joined to the k/2 nearest on
// either side of a ring) over a random permutation of the clients, or the complete graph.
// Deterministic given the seed, which the coordinator draws from the CSPRNG (tests inject it).
#pragma once

#include <cstdint>
#include <vector>

#include "crypto/secret.h"

namespace fleet {

// neighbours[i - 1] = sorted neighbour indices of client i (1-based), never including i.
std::vector<std::vector<uint32_t>> BuildNeighbourGraph(uint32_t n, uint32_t k, bool complete,
                                                       const crypto::Secret32& seed);

}  // namespace fleet
