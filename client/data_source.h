// Local sensor data for training and evaluation, loaded from CSV or whitespace-separated files
// with a declared column mapping. No torch here: the trainer wraps these buffers zero-copy.
//
// Several files in one dataset are concatenated row-wise (e.g. two recording sessions). A column
// is named by header name or 0-based index; `features: rest` takes every column that is not the
// label or the subject. Rows whose fields do not parse are an error naming file:line and column,
// or are skipped when on_bad_row is "skip".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"

namespace fleet {

struct Dataset {
  size_t rows = 0;
  size_t cols = 0;                 // features per row
  std::vector<float> features;     // rows x cols, row-major
  std::vector<float> labels;       // rows
  std::vector<int64_t> subjects;   // rows, or empty when no subject column
};

struct DataFileSpec {
  std::string path;
  bool csv = true;                 // false: whitespace-separated
  bool header = false;
  std::vector<std::string> features;  // names or indices; empty with features_rest
  bool features_rest = false;
  std::string label;               // name or index (configs require it; empty: label 0)
  std::string subject;             // name or index (optional)
};

struct DatasetSpec {
  std::string name;
  bool train = true;               // role: train (else: evaluate only)
  double validation_fraction = 0;  // train role: rows held out for local validation
  double label_offset = 0;         // added to every label (e.g. -1 for labels numbered from 1)
  std::vector<int64_t> subjects;   // keep only rows of these subjects (empty: all)
  bool skip_bad_rows = false;
  // Standardization x' = (x - mean) / std per feature, in feature order, applied at load time so
  // training and evaluation see the same inputs. Declare the same statistics on every device of
  // a fleet (e.g. from a pilot site or the sensor's datasheet). Empty: raw values.
  std::vector<double> normalize_mean, normalize_std;
  std::vector<DataFileSpec> files;
};

// Reads one `datasets:` entry of a client config. Paths are taken relative to `base_dir`.
StatusOr<DatasetSpec> ParseDatasetSpec(ConfigMap m, const std::string& base_dir);

StatusOr<Dataset> LoadDataset(const DatasetSpec& spec);
// The same over file contents already read: texts[i] is the contents of spec.files[i] (whose
// path only names it in errors).
StatusOr<Dataset> ParseDataset(const DatasetSpec& spec, const std::vector<std::string>& texts);

// Deterministically moves `fraction` of the rows (shuffled by `seed`) into *val.
void SplitValidation(const Dataset& all, double fraction, uint64_t seed, Dataset* train,
                     Dataset* val);

}  // namespace fleet
