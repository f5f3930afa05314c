#include "aggregation/secagg_graph.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "crypto/prg.h"

namespace fleet {

std::vector<std::vector<uint32_t>> BuildNeighbourGraph(uint32_t n, uint32_t k, bool complete,
                                                       const crypto::Secret32& seed) {
  std::vector<std::vector<uint32_t>> g(n);
  if (complete || k + 1 >= n) {
    for (uint32_t i = 1; i <= n; ++i) {
      for (uint32_t j = 1; j <= n; ++j) {
        if (j != i) g[i - 1].push_back(j);
      }
    }
    return g;
  }
  // Fisher-Yates with 53-bit uniforms from the seeded ChaCha20 stream (bias < n / 2^53).
  std::vector<uint32_t> ring(n);
  std::iota(ring.begin(), ring.end(), 1);
  std::vector<double> u(n);
  crypto::UniformDoubles(seed, u.data(), u.size());
  for (uint32_t i = n - 1; i > 0; --i) {
    uint32_t j = std::min(i, static_cast<uint32_t>(std::floor(u[i] * (i + 1))));
    std::swap(ring[i], ring[j]);
  }
  for (uint32_t pos = 0; pos < n; ++pos) {
    for (uint32_t d = 1; d <= k / 2; ++d) {
      g[ring[pos] - 1].push_back(ring[(pos + d) % n]);
      g[ring[pos] - 1].push_back(ring[(pos + n - d) % n]);
    }
  }
  for (auto& nb : g) std::sort(nb.begin(), nb.end());
  return g;
}

}  // namespace fleet
