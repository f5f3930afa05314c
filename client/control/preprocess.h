// Turns a stream of readings into model input rows: missing values -> clipping -> normalization
// -> windowing (size, stride) -> window features. Training (rows from the on-device buffer) and
// inference (live readings) both go through Push(), so they cannot drift apart.
//
// Not thread-safe: one Preprocessor per stream (the control loop owns one; training builds its
// own over the buffered readings).
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "client/control/sensor_schema.h"
#include "common/config.h"
#include "common/status.h"

namespace fleet::control {

enum class MissingPolicy { kForwardFill, kMean, kDrop };
enum class WindowFeature { kRaw, kMean, kStd, kMin, kMax, kEnergy };

struct PreprocessSpec {
  size_t window = 1;
  size_t stride = 1;
  MissingPolicy missing = MissingPolicy::kForwardFill;
  // Per field (schema order); empty: no clipping. Applied before normalization.
  std::vector<double> clip_min, clip_max;
  // Per field; empty: raw values. Declare the statistics the fleet's model was trained with.
  std::vector<double> normalize_mean, normalize_std;
  // kRaw: the window's values, oldest first, time-major ([t][field]). Statistics give one value
  // per field each, in the order listed. kEnergy is the mean of squares, i.e. the window's total
  // spectral energy divided by its length squared (Parseval), DC included.
  std::vector<WindowFeature> features{WindowFeature::kRaw};
};

// Reads a `preprocess:` block for a schema with `num_fields` fields (`field_names` for messages).
StatusOr<PreprocessSpec> ParsePreprocessSpec(ConfigMap m, const std::vector<std::string>& fields);

class Preprocessor {
 public:
  Preprocessor(PreprocessSpec spec, size_t num_fields);

  size_t output_dim() const { return output_dim_; }
  // Feeds one reading. Returns true when a window completed; then `row` (output_dim floats)
  // holds its features, *label the label of its newest reading and *raw the newest reading
  // after missing-value filling (un-normalized, for rules over raw signals). A reading dropped
  // by the missing policy returns false.
  bool Push(const Reading& r, float* row, float* label, std::vector<float>* raw);
  void Reset();

 private:
  PreprocessSpec spec_;
  size_t fields_;
  size_t output_dim_;
  std::vector<float> last_;       // forward-fill state (NaN until seen)
  std::vector<double> sum_;       // running means for kMean
  std::vector<uint64_t> count_;
  std::deque<std::vector<float>> window_;  // normalized values, newest last
  size_t since_emit_ = 0;  // readings since the last emitted window
  bool emitted_ = false;
  float label_ = 0;
};

}  // namespace fleet::control
