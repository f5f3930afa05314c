#include "client/control/preprocess.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace fleet::control {

namespace {

// A double as the nearest float within float's finite range: readings are floats, but their
// normalized values, squares and sums may not be, and converting those is undefined behaviour.
float ToFloat(double v) {
  constexpr double kMax = std::numeric_limits<float>::max();
  return static_cast<float>(std::clamp(v, -kMax, kMax));
}

StatusOr<WindowFeature> FeatureByName(const std::string& s) {
  if (s == "raw") return WindowFeature::kRaw;
  if (s == "mean") return WindowFeature::kMean;
  if (s == "std") return WindowFeature::kStd;
  if (s == "min") return WindowFeature::kMin;
  if (s == "max") return WindowFeature::kMax;
  if (s == "energy") return WindowFeature::kEnergy;
  return InvalidArgument("'" + s + "' (expected raw, mean, std, min, max or energy)");
}

Status PerField(ConfigMap& m, const std::string& key, size_t n, std::vector<double>* out) {
  RETURN_IF_ERROR(m.Get(key, out));
  if (!out->empty() && out->size() != n) {
    return InvalidArgument(m.Where(key) + " has " + std::to_string(out->size()) +
                           " values; the schema has " + std::to_string(n) + " fields");
  }
  return OkStatus();
}

}  // namespace

StatusOr<PreprocessSpec> ParsePreprocessSpec(ConfigMap m, const std::vector<std::string>& fields) {
  PreprocessSpec s;
  uint32_t window = 1, stride = 1;
  RETURN_IF_ERROR(m.Get("window", &window));
  RETURN_IF_ERROR(m.Get("stride", &stride));
  if (window == 0 || window > 4096) return InvalidArgument(m.Where("window") + " must be in [1, 4096]");
  if (stride == 0 || stride > window) {
    return InvalidArgument(m.Where("stride") + " must be in [1, window]");
  }
  s.window = window;
  s.stride = stride;
  std::string missing = "ffill";
  RETURN_IF_ERROR(m.Get("missing", &missing));
  if (missing == "ffill") s.missing = MissingPolicy::kForwardFill;
  else if (missing == "mean") s.missing = MissingPolicy::kMean;
  else if (missing == "drop") s.missing = MissingPolicy::kDrop;
  else return InvalidArgument(m.Where("missing") + " is '" + missing + "' (expected ffill, mean or drop)");
  const size_t n = fields.size();
  RETURN_IF_ERROR(PerField(m, "clip_min", n, &s.clip_min));
  RETURN_IF_ERROR(PerField(m, "clip_max", n, &s.clip_max));
  if (s.clip_min.empty() != s.clip_max.empty()) {
    return InvalidArgument(m.Where("clip_min") + ": give clip_min and clip_max together");
  }
  for (size_t i = 0; i < s.clip_min.size(); ++i) {
    if (!(s.clip_min[i] <= s.clip_max[i])) {
      return InvalidArgument(m.Where("clip_min") + ": field '" + fields[i] +
                             "' has clip_min > clip_max");
    }
  }
  ASSIGN_OR_RETURN(ConfigMap norm, m.Child("normalize"));
  RETURN_IF_ERROR(PerField(norm, "mean", n, &s.normalize_mean));
  RETURN_IF_ERROR(PerField(norm, "std", n, &s.normalize_std));
  RETURN_IF_ERROR(norm.Finish());
  if (s.normalize_mean.size() != s.normalize_std.size()) {
    return InvalidArgument(m.Where("normalize") + ": give mean and std together");
  }
  for (size_t i = 0; i < s.normalize_std.size(); ++i) {
    if (!(s.normalize_std[i] > 0)) {
      return InvalidArgument(m.Where("normalize") + ": std of field '" + fields[i] +
                             "' must be > 0");
    }
  }
  if (m.Has("features")) {
    std::vector<std::string> names;
    RETURN_IF_ERROR(m.Get("features", &names));
    if (names.empty()) return InvalidArgument(m.Where("features") + " must not be empty");
    s.features.clear();
    for (const std::string& f : names) {
      StatusOr<WindowFeature> wf = FeatureByName(f);
      if (!wf.ok()) return InvalidArgument(m.Where("features") + ": " + wf.status().message());
      s.features.push_back(*wf);
    }
  }
  RETURN_IF_ERROR(m.Finish());
  return s;
}

Preprocessor::Preprocessor(PreprocessSpec spec, size_t num_fields)
    : spec_(std::move(spec)), fields_(num_fields) {
  output_dim_ = 0;
  for (WindowFeature f : spec_.features) {
    output_dim_ += f == WindowFeature::kRaw ? spec_.window * fields_ : fields_;
  }
  Reset();
}

void Preprocessor::Reset() {
  last_.assign(fields_, std::nanf(""));
  sum_.assign(fields_, 0);
  count_.assign(fields_, 0);
  window_.clear();
  since_emit_ = 0;
  emitted_ = false;
}

bool Preprocessor::Push(const Reading& r, float* row, float* label, std::vector<float>* raw) {
  std::vector<float> v = r.values;
  for (size_t i = 0; i < fields_; ++i) {
    if (std::isnan(v[i])) {
      if (spec_.missing == MissingPolicy::kDrop) return false;
      if (spec_.missing == MissingPolicy::kForwardFill && !std::isnan(last_[i])) {
        v[i] = last_[i];
      } else if (count_[i] > 0) {
        v[i] = ToFloat(sum_[i] / static_cast<double>(count_[i]));
      } else if (!spec_.normalize_mean.empty()) {
        v[i] = ToFloat(spec_.normalize_mean[i]);  // nothing seen yet: the prior
      } else {
        v[i] = 0;
      }
    } else {
      last_[i] = v[i];
      sum_[i] += v[i];
      ++count_[i];
    }
  }
  if (raw != nullptr) *raw = v;
  for (size_t i = 0; i < fields_; ++i) {
    if (!spec_.clip_min.empty()) {
      v[i] = std::clamp(v[i], ToFloat(spec_.clip_min[i]), ToFloat(spec_.clip_max[i]));
    }
    if (!spec_.normalize_mean.empty()) {
      v[i] = ToFloat((v[i] - spec_.normalize_mean[i]) / spec_.normalize_std[i]);
    }
  }
  window_.push_back(std::move(v));
  label_ = r.label;
  if (window_.size() > spec_.window) window_.pop_front();
  if (window_.size() < spec_.window) return false;
  // The first full window emits; later ones every `stride` readings.
  if (emitted_ && ++since_emit_ < spec_.stride) return false;
  emitted_ = true;
  since_emit_ = 0;
  float* out = row;
  const double n = static_cast<double>(spec_.window);
  for (WindowFeature f : spec_.features) {
    if (f == WindowFeature::kRaw) {
      for (const auto& w : window_) out = std::copy(w.begin(), w.end(), out);
      continue;
    }
    for (size_t i = 0; i < fields_; ++i) {
      double sum = 0, sq = 0, lo = window_.front()[i], hi = lo;
      for (const auto& w : window_) {
        sum += w[i];
        sq += static_cast<double>(w[i]) * w[i];
        lo = std::min<double>(lo, w[i]);
        hi = std::max<double>(hi, w[i]);
      }
      double mean = sum / n;
      double value = 0;
      switch (f) {
        case WindowFeature::kMean: value = mean; break;
        case WindowFeature::kStd: value = std::sqrt(std::max(0.0, sq / n - mean * mean)); break;
        case WindowFeature::kMin: value = lo; break;
        case WindowFeature::kMax: value = hi; break;
        case WindowFeature::kEnergy: value = sq / n; break;
        case WindowFeature::kRaw: break;
      }
      *out++ = ToFloat(value);
    }
  }
  *label = label_;
  return true;
}

}  // namespace fleet::control
