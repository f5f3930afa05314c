#include "aggregation/secagg_params.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace fleet {
namespace {

double LogChoose(double a, double b) {
  return std::lgamma(a + 1) - std::lgamma(b + 1) - std::lgamma(a - b + 1);
}

// Hypergeometric: population N with K marked, m draws without replacement.
class Hypergeometric {
 public:
  Hypergeometric(uint32_t N, uint32_t K, uint32_t m)
      : N_(N), K_(K), m_(m), log_total_(LogChoose(N, m)) {}
  uint32_t lo() const { return m_ > N_ - K_ ? m_ - (N_ - K_) : 0; }
  uint32_t hi() const { return std::min(K_, m_); }
  uint32_t Mode() const {
    const double mode = std::floor((m_ + 1.0) * (K_ + 1.0) / (N_ + 2.0));
    return std::clamp(static_cast<uint32_t>(mode), lo(), hi());
  }
  double Pmf(uint32_t x) const {
    if (x < lo() || x > hi()) return 0;
    return std::exp(LogChoose(K_, x) + LogChoose(N_ - K_, m_ - x) - log_total_);
  }
  // Pmf(x - 1) and Pmf(x + 1) from p = Pmf(x), x inside the support: the ratio of neighbouring
  // terms, for passes over a tail.
  double Previous(uint32_t x, double p) const {
    const double N = N_, K = K_, m = m_, X = x;
    return p * X * (N - K - m + X) / ((K - X + 1) * (m - X + 1));
  }
  double Next(uint32_t x, double p) const {
    const double N = N_, K = K_, m = m_, X = x;
    return p * (K - X) * (m - X) / ((X + 1) * (N - K - m + X + 1));
  }
  // The pmf rises to its mode and falls after it. The far tails are below `tiny` long before
  // the support ends; these give where: the largest x of the upper tail with Pmf(x) >= tiny
  // (or the mode), and the smallest x of the lower tail likewise, by bisection.
  uint32_t UpperEnd(double tiny) const {
    uint32_t a = Mode(), b = hi();  // Pmf(a) >= tiny is assumed; find the last such x
    while (a < b) {
      const uint32_t mid = a + (b - a + 1) / 2;
      if (Pmf(mid) >= tiny)
        a = mid;
      else
        b = mid - 1;
    }
    return a;
  }
  uint32_t LowerEnd(double tiny) const {
    uint32_t a = lo(), b = Mode();
    while (a < b) {
      const uint32_t mid = a + (b - a) / 2;
      if (Pmf(mid) >= tiny)
        b = mid;
      else
        a = mid + 1;
    }
    return a;
  }

 private:
  uint32_t N_, K_, m_;
  double log_total_;  // log C(N, m)
};

uint32_t Corrupt(uint32_t n, const SecAggThreatModel& th) {
  return static_cast<uint32_t>(std::ceil(th.corrupt_fraction * n - 1e-9));
}
uint32_t Dropouts(uint32_t n, const SecAggThreatModel& th) {
  return static_cast<uint32_t>(std::ceil(th.dropout_fraction * n - 1e-9));
}

double EpsSecurity(uint32_t n) { return std::pow(2.0, -(kSecAggSecurityBits + 1)) / n; }
double EpsCorrectness(uint32_t n) { return std::pow(2.0, -kSecAggCorrectnessBits) / n; }

// Union bound of the paper on a random Harary graph H(n, k) losing connectivity once the
// corrupt and dropped clients are removed: it needs k/2 consecutive bad nodes in two places.
bool StaysConnected(uint32_t n, uint32_t k, uint32_t bad) {
  if (k > bad) return true;
  double log_p = std::log(n) + std::log(n - k - 1.0) - std::log(2.0) + std::lgamma(bad + 1.0) +
                 std::lgamma(n - k + 1.0) - std::lgamma(n + 1.0) - std::lgamma(bad - k + 1.0);
  return log_p < std::log(EpsSecurity(n));
}

// Tail terms below eps * kNegligible, however many, cannot move a sum compared with eps: a pass
// over a tail starts where its terms reach that size (a bisection), not at the end of the
// support. With the one-pass sums below that makes a threshold O(sqrt(k) + log k) instead of
// O(k^2) (summing the tail afresh for every t), and the search over k from seconds to
// milliseconds for thousands of clients at high corrupt and dropout rates.
constexpr double kNegligible = 0x1p-80;

// Smallest t with P[#corrupt neighbours >= t] <= eps: fewer than t corrupt holders w.h.p. The
// tail P[X >= t] grows as t comes down from the top of the support: one pass from there.
uint32_t SecureThreshold(uint32_t n, uint32_t k, uint32_t corrupt) {
  Hypergeometric x(n - 1, std::min(corrupt, n - 1), k);
  const double eps = EpsSecurity(n);
  const uint32_t bottom = std::max<uint32_t>(x.lo(), 1);
  uint32_t i = x.UpperEnd(eps * kNegligible);
  if (i < bottom) return 1;
  double p = x.Pmf(i), tail = 0;  // P[X = i], P[X >= i]
  for (;;) {
    tail += p;
    if (tail > eps) return i + 1;
    if (i == bottom) return 1;
    p = x.Previous(i, p);
    --i;
  }
}

// Largest t with P[#surviving neighbours < t] <= eps: t live holders w.h.p.
uint32_t LiveThreshold(uint32_t n, uint32_t k, uint32_t dropouts) {
  Hypergeometric y(n - 1, n - 1 - std::min(dropouts, n - 1), k);
  // Below the support every term is 0; below LowerEnd, negligible.
  uint32_t t = std::min(y.LowerEnd(EpsCorrectness(n) * kNegligible), k);
  double p = y.Pmf(t), below = 0;  // P[Y = t], P[Y < t + 1]
  while (t < k) {
    below += p;
    if (below > EpsCorrectness(n)) break;
    p = y.Next(t, p);
    ++t;
  }
  return std::max<uint32_t>(t, y.lo());
}

}  // namespace

std::string SecAggGraphParams::ToString() const {
  std::ostringstream os;
  os << "n=" << n << " k=" << k << " t=" << t << (complete ? " (complete graph)" : " (Harary)");
  return os.str();
}

Status ValidateThreatModel(const SecAggThreatModel& th) {
  if (!(th.corrupt_fraction >= 0 && th.corrupt_fraction < 1)) {
    return InvalidArgument("corrupt_fraction must be in [0, 1)");
  }
  if (!(th.dropout_fraction >= 0 && th.dropout_fraction < 1)) {
    return InvalidArgument("dropout_fraction must be in [0, 1)");
  }
  if (th.corrupt_fraction + th.dropout_fraction > 0.9) {
    return InvalidArgument(
        "corrupt_fraction + dropout_fraction must be <= 0.9: beyond that no neighbourhood size "
        "keeps a threshold both above the corrupt holders and below the live ones (SecAgg+, sec. 4)");
  }
  if (th.threshold == 1) {
    return InvalidArgument("threshold 1 would let any single holder reveal a client's secrets");
  }
  if (th.neighbours % 2 == 1 && th.neighbours != 0) {
    // Odd k is only meaningful as "complete" for a particular n; Harary graphs need even k.
    return InvalidArgument("neighbours must be even (Harary graph), or 0 to derive it");
  }
  if (th.threshold != 0 && th.neighbours != 0 && th.threshold > th.neighbours + 1) {
    return InvalidArgument("threshold cannot exceed neighbours + 1 (the holders of each secret)");
  }
  return OkStatus();
}

void SetThreatModel(const SecAggThreatModel& th, v1::SecAggTaskConfig* config) {
  config->set_corrupt_fraction(th.corrupt_fraction);
  config->set_dropout_fraction(th.dropout_fraction);
  config->set_neighbours(th.neighbours);
  config->set_threshold(th.threshold);
}

SecAggThreatModel ThreatModelOf(const v1::SecAggTaskConfig& config) {
  SecAggThreatModel th;
  th.corrupt_fraction = config.corrupt_fraction();
  th.dropout_fraction = config.dropout_fraction();
  th.neighbours = config.neighbours();
  th.threshold = config.threshold();
  return th;
}

StatusOr<SecAggGraphParams> ChooseGraphParams(uint32_t n, const SecAggThreatModel& th) {
  RETURN_IF_ERROR(ValidateThreatModel(th));
  if (n < kSecAggMinClients) {
    return FailedPrecondition("secure aggregation needs at least 3 clients (have " +
                              std::to_string(n) + "): with 2, each could subtract its own update "
                              "from the sum and learn the other's");
  }
  const uint32_t corrupt = Corrupt(n, th), dropouts = Dropouts(n, th);
  SecAggGraphParams p;
  p.n = n;

  const bool want_complete = th.neighbours >= n - 1;
  if (th.neighbours != 0 && !want_complete) {
    p.k = th.neighbours;
    if (!StaysConnected(n, p.k, corrupt + dropouts)) {
      return FailedPrecondition(
          "neighbours=" + std::to_string(p.k) + " is insecure for n=" + std::to_string(n) +
          ": removing the expected corrupt and dropped clients disconnects the Harary graph with "
          "probability above 2^-40 (SecAgg+, sec. 4); use more neighbours");
    }
    uint32_t t_sec = std::max<uint32_t>(SecureThreshold(n, p.k, corrupt), 2);
    p.t = th.threshold != 0 ? th.threshold : t_sec;
    if (p.t < t_sec) {
      return FailedPrecondition("threshold=" + std::to_string(p.t) + " is insecure for n=" +
                                std::to_string(n) + ", k=" + std::to_string(p.k) +
                                ": corrupt neighbours reach it with probability above 2^-40; the "
                                "smallest secure threshold is " + std::to_string(t_sec));
    }
    if (p.t > p.k + 1) return FailedPrecondition("threshold exceeds the k + 1 holders");
    return p;
  }
  if (th.neighbours == 0) {
    for (uint32_t k = 2; k < n - 1; k += 2) {
      if (!StaysConnected(n, k, corrupt + dropouts)) continue;
      uint32_t t = std::max<uint32_t>(SecureThreshold(n, k, corrupt), 2);
      if (th.threshold != 0) {
        if (th.threshold < t) continue;  // needs a larger k for the requested threshold
        t = th.threshold;
      }
      if (t <= k + 1 && t <= LiveThreshold(n, k, dropouts)) {
        p.k = k;
        p.t = t;
        return p;
      }
    }
  }
  // Complete graph: every client holds a share of everyone's secrets (Bonawitz et al. 2017).
  p.k = n - 1;
  p.complete = true;
  const uint32_t t_sec = std::max<uint32_t>(corrupt + 1, 2);
  const uint32_t t_live = n - std::min(dropouts, n);
  if (th.threshold != 0) {
    p.t = th.threshold;
    if (p.t < t_sec) {
      return FailedPrecondition("threshold=" + std::to_string(p.t) + " is insecure for n=" +
                                std::to_string(n) + ": the " + std::to_string(corrupt) +
                                " corrupt clients assumed (corrupt_fraction) would hold enough "
                                "shares to unmask an honest client; use at least " +
                                std::to_string(t_sec));
    }
    if (p.t > n) return FailedPrecondition("threshold exceeds the number of clients");
    return p;
  }
  // Default: two thirds, as Bonawitz et al. recommend, capped to what the dropouts leave.
  p.t = std::min(std::max(t_sec, 2 * n / 3 + 1), t_live);
  if (p.t < t_sec) {
    return FailedPrecondition("no secure threshold for n=" + std::to_string(n) + ": " +
                              std::to_string(corrupt) + " corrupt and " + std::to_string(dropouts) +
                              " dropped clients leave fewer live holders than the " +
                              std::to_string(t_sec) + " needed for security");
  }
  return p;
}

}  // namespace fleet
