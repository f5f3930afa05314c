// Latency histogram for hot paths: one writer records without locks or allocation, any thread
// may read percentiles. Buckets are log-linear (8 per power of two) over microseconds, so a
// reported percentile is within ~9% of the true value.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

namespace fleet {

class LatencyHistogram {
 public:
  static constexpr int kSub = 8;            // buckets per power of two
  static constexpr int kBuckets = 40 * kSub;  // up to 2^40 us

  void Record(uint64_t us) {
    counts_[Bucket(us)].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    uint64_t m = max_.load(std::memory_order_relaxed);
    while (us > m && !max_.compare_exchange_weak(m, us, std::memory_order_relaxed)) {
    }
  }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  uint64_t max() const { return max_.load(std::memory_order_relaxed); }

  // The upper edge of the bucket holding the p-th percentile (p in [0, 100]); 0 when empty.
  uint64_t Percentile(double p) const {
    uint64_t total = count();
    if (total == 0) return 0;
    uint64_t rank = static_cast<uint64_t>(p / 100.0 * static_cast<double>(total - 1)) + 1;
    uint64_t seen = 0;
    for (int b = 0; b < kBuckets; ++b) {
      seen += counts_[b].load(std::memory_order_relaxed);
      if (seen >= rank) {
        uint64_t edge = UpperEdge(b);
        uint64_t m = max();
        return edge < m ? edge : m;
      }
    }
    return max();
  }

 private:
  static int Bucket(uint64_t us) {
    if (us < kSub) return static_cast<int>(us);
    int msb = 63 - __builtin_clzll(us);  // >= 3
    int sub = static_cast<int>((us >> (msb - 3)) & (kSub - 1));
    int b = (msb - 2) * kSub + sub;
    return b < kBuckets ? b : kBuckets - 1;
  }
  static uint64_t UpperEdge(int b) {
    if (b < kSub) return static_cast<uint64_t>(b);
    int msb = b / kSub + 2;
    uint64_t sub = static_cast<uint64_t>(b % kSub);
    return ((kSub + sub + 1) << (msb - 3)) - 1;
  }

  std::array<std::atomic<uint64_t>, kBuckets> counts_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> max_{0};
};

}  // namespace fleet
