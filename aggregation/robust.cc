#include "aggregation/robust.h"

#include <algorithm>
#include <numeric>

namespace fleet {

void BufferedStrategy::BeginRound(const std::vector<float>& global) {
  size_ = global.size();
  updates_.clear();
  metrics_.clear();
}

Status BufferedStrategy::AccumulateFit(const std::vector<ParamSpan>& update,
                                       const FitMetrics& metrics) {
  if (metrics.num_examples == 0) return InvalidArgument("update reports 0 training examples");
  RETURN_IF_ERROR(CheckCoverage(update, size_));
  std::vector<float> flat(size_);
  for (const ParamSpan& s : update) {
    std::copy(s.data, s.data + s.size, flat.begin() + static_cast<ptrdiff_t>(s.offset));
  }
  updates_.push_back(std::move(flat));
  metrics_.push_back(metrics);
  return OkStatus();
}

StatusOr<std::vector<float>> BufferedStrategy::FinishFit(FitMetrics* summary) {
  if (updates_.empty()) return FailedPrecondition("no updates to aggregate");
  ASSIGN_OR_RETURN(std::vector<float> out, Combine(updates_));
  if (summary != nullptr) {  // metrics are reports, not parameters: example-weighted as usual
    FitMetrics s;
    double w = 0;
    for (const auto& m : metrics_) {
      const double n = static_cast<double>(m.num_examples);
      s.num_examples += m.num_examples;
      s.train_loss += n * m.train_loss;
      s.val_loss += n * m.val_loss;
      s.val_accuracy += n * m.val_accuracy;
      w += n;
    }
    s.train_loss /= w;
    s.val_loss /= w;
    s.val_accuracy /= w;
    *summary = s;
  }
  return out;
}

StatusOr<std::vector<float>> CoordinateMedian::Combine(const std::vector<std::vector<float>>& u) {
  const size_t n = u.size(), d = u[0].size();
  std::vector<float> out(d), col(n);
  for (size_t j = 0; j < d; ++j) {
    for (size_t i = 0; i < n; ++i) col[i] = u[i][j];
    auto mid = col.begin() + static_cast<ptrdiff_t>(n / 2);
    std::nth_element(col.begin(), mid, col.end());
    if (n % 2 == 1) {
      out[j] = *mid;
    } else {
      const float lower = *std::max_element(col.begin(), mid);
      out[j] = static_cast<float>((static_cast<double>(lower) + *mid) / 2);
    }
  }
  return out;
}

StatusOr<std::vector<float>> TrimmedMean::Combine(const std::vector<std::vector<float>>& u) {
  const size_t n = u.size(), d = u[0].size();
  const size_t k = static_cast<size_t>(fraction_ * static_cast<double>(n));
  if (n <= 2 * k) {
    return FailedPrecondition("trimmed_mean: trimming " + std::to_string(k) + " from each end of " +
                              std::to_string(n) + " updates leaves none");
  }
  std::vector<float> out(d), col(n);
  for (size_t j = 0; j < d; ++j) {
    for (size_t i = 0; i < n; ++i) col[i] = u[i][j];
    std::sort(col.begin(), col.end());
    double s = 0;
    for (size_t i = k; i < n - k; ++i) s += col[i];
    out[j] = static_cast<float>(s / static_cast<double>(n - 2 * k));
  }
  return out;
}

StatusOr<std::vector<float>> Krum::Combine(const std::vector<std::vector<float>>& u) {
  const size_t n = u.size(), d = u[0].size();
  if (n < 2 * static_cast<size_t>(f_) + 3) {
    return FailedPrecondition("krum with byzantine f=" + std::to_string(f_) + " needs at least " +
                              std::to_string(2 * f_ + 3) + " updates, got " + std::to_string(n));
  }
  std::vector<std::vector<double>> dist(n, std::vector<double>(n, 0));
  for (size_t a = 0; a < n; ++a) {
    for (size_t b = a + 1; b < n; ++b) {
      double s = 0;
      for (size_t j = 0; j < d; ++j) {
        const double t = static_cast<double>(u[a][j]) - u[b][j];
        s += t * t;
      }
      dist[a][b] = dist[b][a] = s;
    }
  }
  const size_t nearest = n - f_ - 2;
  std::vector<double> score(n);
  for (size_t a = 0; a < n; ++a) {
    std::vector<double> others;
    for (size_t b = 0; b < n; ++b) {
      if (b != a) others.push_back(dist[a][b]);
    }
    std::partial_sort(others.begin(), others.begin() + static_cast<ptrdiff_t>(nearest),
                      others.end());
    score[a] = std::accumulate(others.begin(), others.begin() + static_cast<ptrdiff_t>(nearest), 0.0);
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return score[a] < score[b]; });
  const size_t m = m_ == 0 ? n - f_ : std::min<size_t>(m_, n);  // 0: multikrum's n - f
  std::vector<double> acc(d, 0);
  for (size_t r = 0; r < m; ++r) {
    for (size_t j = 0; j < d; ++j) acc[j] += u[order[r]][j];
  }
  std::vector<float> out(d);
  for (size_t j = 0; j < d; ++j) out[j] = static_cast<float>(acc[j] / static_cast<double>(m));
  return out;
}

}  // namespace fleet
