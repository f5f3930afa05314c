#include "client/data_source.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string_view>

#include "common/file_util.h"
#include "common/log.h"

namespace fleet {
namespace {

bool IsIndex(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  return s;
}

// Splits one line into fields. CSV honours double quotes around fields.
void SplitLine(std::string_view line, bool csv, std::vector<std::string_view>* out) {
  out->clear();
  if (csv) {
    size_t start = 0;
    bool quoted = false;
    for (size_t i = 0; i <= line.size(); ++i) {
      if (i < line.size() && line[i] == '"') quoted = !quoted;
      if (i == line.size() || (line[i] == ',' && !quoted)) {
        out->push_back(Trim(line.substr(start, i - start)));
        start = i + 1;
      }
    }
    return;
  }
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
    size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r') ++i;
    if (i > start) out->push_back(line.substr(start, i - start));
  }
}

bool ParseFloat(std::string_view s, float* out) {
  if (s.empty()) return false;
  auto res = std::from_chars(s.data(), s.data() + s.size(), *out);
  return res.ec == std::errc() && res.ptr == s.data() + s.size() && std::isfinite(*out);
}

// A subject id: an integer (also written like "3.0") below 2^53 in magnitude, where every
// integer a double holds is exact.
bool ParseSubject(std::string_view s, int64_t* out) {
  double d = 0;
  if (s.empty()) return false;
  auto res = std::from_chars(s.data(), s.data() + s.size(), d);
  if (res.ec != std::errc() || res.ptr != s.data() + s.size() || d != std::floor(d) ||
      !(std::fabs(d) < 9007199254740992.0)) {
    return false;
  }
  *out = static_cast<int64_t>(d);
  return true;
}

StatusOr<int> ResolveColumn(const std::string& sel, const std::vector<std::string>& names,
                            size_t ncols, const std::string& path) {
  if (IsIndex(sel)) {
    size_t idx = 0;
    auto res = std::from_chars(sel.data(), sel.data() + sel.size(), idx);
    if (res.ec != std::errc() || idx >= ncols) {
      return InvalidArgument(path + ": column index " + sel + " is out of range (file has " +
                             std::to_string(ncols) + " columns)");
    }
    return static_cast<int>(idx);
  }
  auto it = std::find(names.begin(), names.end(), sel);
  if (it == names.end()) {
    if (names.empty()) {
      return InvalidArgument(path + ": column '" + sel +
                             "' named but the file has no header (set header: true or use an index)");
    }
    return InvalidArgument(path + ": no column named '" + sel + "' in the header");
  }
  return static_cast<int>(it - names.begin());
}

// Appends the rows of `text`, the contents of file `f`, to *ds.
Status AppendRows(const DataFileSpec& f, std::string_view text, const DatasetSpec& spec,
                  Dataset* ds, size_t* skipped) {
  std::vector<std::string_view> fields;
  std::vector<std::string> names;
  size_t pos = 0, line_no = 0;
  auto next_line = [&](std::string_view* line) {
    while (pos < text.size()) {
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      *line = text.substr(pos, end - pos);
      pos = end + 1;
      ++line_no;
      if (!Trim(*line).empty()) return true;
    }
    return false;
  };

  std::string_view line;
  if (f.header) {
    if (!next_line(&line)) return InvalidArgument(f.path + ": empty file, expected a header");
    SplitLine(line, f.csv, &fields);
    for (auto fv : fields) names.emplace_back(Trim(fv));
  }
  size_t header_line = line_no;
  if (!next_line(&line)) return InvalidArgument(f.path + ": no data rows");
  SplitLine(line, f.csv, &fields);
  const size_t ncols = fields.size();
  // R's write.csv writes a row-name column that has no header entry: shift the names by one.
  if (f.header && names.size() + 1 == ncols) names.insert(names.begin(), "");
  if (f.header && names.size() != ncols) {
    return InvalidArgument(f.path + ":" + std::to_string(header_line) + ": header has " +
                           std::to_string(names.size()) + " columns, first row has " +
                           std::to_string(ncols));
  }

  int label_col = -1;  // none: every row gets label 0
  if (!f.label.empty()) {
    ASSIGN_OR_RETURN(label_col, ResolveColumn(f.label, names, ncols, f.path));
  }
  int subject_col = -1;
  if (!f.subject.empty()) {
    ASSIGN_OR_RETURN(subject_col, ResolveColumn(f.subject, names, ncols, f.path));
  }
  std::vector<int> feature_cols;
  if (f.features_rest) {
    for (int c = 0; c < static_cast<int>(ncols); ++c) {
      if (c != label_col && c != subject_col) feature_cols.push_back(c);
    }
  } else {
    for (const auto& sel : f.features) {
      ASSIGN_OR_RETURN(int c, ResolveColumn(sel, names, ncols, f.path));
      feature_cols.push_back(c);
    }
  }
  if (feature_cols.empty()) return InvalidArgument(f.path + ": no feature columns selected");
  if (ds->rows == 0 && ds->cols == 0) {
    ds->cols = feature_cols.size();
  } else if (ds->cols != feature_cols.size()) {
    return InvalidArgument(f.path + ": selects " + std::to_string(feature_cols.size()) +
                           " features, earlier files of dataset '" + spec.name + "' selected " +
                           std::to_string(ds->cols));
  }
  auto col_name = [&](int c) {
    return names.empty() || names[c].empty() ? "column " + std::to_string(c)
                                             : "column '" + names[c] + "'";
  };

  std::vector<float> row(feature_cols.size());
  bool first_row = true;  // already split above
  do {
    if (!first_row) SplitLine(line, f.csv, &fields);
    first_row = false;
    std::string where = f.path + ":" + std::to_string(line_no);
    std::string problem;
    float label = 0;
    int64_t subj = 0;
    if (fields.size() != ncols) {
      problem = where + ": expected " + std::to_string(ncols) + " fields, found " +
                std::to_string(fields.size());
    } else {
      for (size_t i = 0; i < feature_cols.size() && problem.empty(); ++i) {
        if (!ParseFloat(fields[feature_cols[i]], &row[i])) {
          problem = where + ": " + col_name(feature_cols[i]) + ": '" +
                    std::string(fields[feature_cols[i]].substr(0, 40)) + "' is not a finite number";
        }
      }
      if (problem.empty() && label_col >= 0 && !ParseFloat(fields[label_col], &label)) {
        problem = where + ": label " + col_name(label_col) + ": '" +
                  std::string(fields[label_col].substr(0, 40)) + "' is not a number";
      }
      if (problem.empty() &&
          !(std::fabs(label + spec.label_offset) <= std::numeric_limits<float>::max())) {
        problem = where + ": label plus label_offset is beyond the float range";
      }
      if (problem.empty() && subject_col >= 0 && !ParseSubject(fields[subject_col], &subj)) {
        problem = where + ": subject " + col_name(subject_col) + " is not an integer (below 2^53)";
      }
    }
    if (!problem.empty()) {
      if (!spec.skip_bad_rows) return InvalidArgument(problem);
      ++*skipped;
      continue;
    }
    if (!spec.subjects.empty() &&
        std::find(spec.subjects.begin(), spec.subjects.end(), subj) == spec.subjects.end()) {
      continue;
    }
    ds->features.insert(ds->features.end(), row.begin(), row.end());
    ds->labels.push_back(static_cast<float>(label + spec.label_offset));
    if (subject_col >= 0) ds->subjects.push_back(subj);
    ds->rows++;
  } while (next_line(&line));
  if (!ds->subjects.empty() && ds->subjects.size() != ds->rows) {
    return InvalidArgument(f.path + ": some files of dataset '" + spec.name +
                           "' have a subject column and others do not");
  }
  return OkStatus();
}

StatusOr<DataFileSpec> ParseFileSpec(ConfigMap m, const std::string& base_dir) {
  DataFileSpec f;
  std::string format = "csv";
  RETURN_IF_ERROR(m.Require("path", &f.path));
  if (!f.path.empty() && f.path[0] != '/') f.path = base_dir + "/" + f.path;
  RETURN_IF_ERROR(m.Get("format", &format));
  if (format != "csv" && format != "whitespace") {
    return InvalidArgument(m.Where("format") + ": expected 'csv' or 'whitespace', got '" + format +
                           "'");
  }
  f.csv = format == "csv";
  RETURN_IF_ERROR(m.Get("header", &f.header));
  YAML::Node features = m.Raw("features");
  if (!features) return m.MissingKey("features");
  if (features.IsScalar() && features.Scalar() == "rest") {
    f.features_rest = true;
  } else {
    RETURN_IF_ERROR(m.Get("features", &f.features));
    if (f.features.empty()) {
      return InvalidArgument(m.Where("features") + ": expected 'rest' or a non-empty list");
    }
  }
  RETURN_IF_ERROR(m.Require("label", &f.label));
  RETURN_IF_ERROR(m.Get("subject", &f.subject));
  RETURN_IF_ERROR(m.Finish());
  return f;
}

}  // namespace

StatusOr<DatasetSpec> ParseDatasetSpec(ConfigMap m, const std::string& base_dir) {
  DatasetSpec spec;
  std::string role = "train", on_bad_row = "error";
  std::vector<std::string> subjects;
  RETURN_IF_ERROR(m.Require("name", &spec.name));
  RETURN_IF_ERROR(m.Get("role", &role));
  if (role != "train" && role != "evaluate") {
    return InvalidArgument(m.Where("role") + ": expected 'train' or 'evaluate', got '" + role + "'");
  }
  spec.train = role == "train";
  RETURN_IF_ERROR(m.Get("validation_fraction", &spec.validation_fraction));
  if (spec.validation_fraction < 0 || spec.validation_fraction >= 1) {
    return InvalidArgument(m.Where("validation_fraction") + ": must be in [0, 1)");
  }
  RETURN_IF_ERROR(m.Get("label_offset", &spec.label_offset));
  RETURN_IF_ERROR(m.Get("subjects", &subjects));
  for (const auto& s : subjects) {
    int64_t id = 0;
    if (!IsIndex(s) || std::from_chars(s.data(), s.data() + s.size(), id).ec != std::errc()) {
      return m.TypeError("subjects", "list of non-negative integers (of at most 2^63 - 1)");
    }
    spec.subjects.push_back(id);
  }
  RETURN_IF_ERROR(m.Get("on_bad_row", &on_bad_row));
  if (on_bad_row != "error" && on_bad_row != "skip") {
    return InvalidArgument(m.Where("on_bad_row") + ": expected 'error' or 'skip'");
  }
  spec.skip_bad_rows = on_bad_row == "skip";
  ASSIGN_OR_RETURN(ConfigMap norm, m.Child("normalize"));
  RETURN_IF_ERROR(norm.Get("mean", &spec.normalize_mean));
  RETURN_IF_ERROR(norm.Get("std", &spec.normalize_std));
  RETURN_IF_ERROR(norm.Finish());
  if (spec.normalize_mean.size() != spec.normalize_std.size()) {
    return InvalidArgument(m.Where("normalize") + ": mean and std must have the same length");
  }
  for (double sd : spec.normalize_std) {
    if (!(sd > 0)) return InvalidArgument(m.Where("normalize") + ": every std must be > 0");
  }
  ASSIGN_OR_RETURN(std::vector<ConfigMap> files, m.ChildList("files"));
  if (files.empty()) return InvalidArgument(m.Where("files") + ": at least one file is required");
  for (auto& fm : files) {
    ASSIGN_OR_RETURN(DataFileSpec f, ParseFileSpec(std::move(fm), base_dir));
    spec.files.push_back(std::move(f));
  }
  RETURN_IF_ERROR(m.Finish());
  return spec;
}

namespace {

// Logs the skipped rows and applies what holds for the dataset as a whole.
StatusOr<Dataset> FinishDataset(const DatasetSpec& spec, Dataset ds, size_t skipped) {
  if (skipped > 0) {
    FLEET_LOG(Warn) << "dataset " << spec.name << ": skipped " << skipped
                    << " malformed rows (on_bad_row: skip)";
  }
  if (ds.rows == 0) {
    return InvalidArgument("dataset '" + spec.name + "' has no rows" +
                           (spec.subjects.empty() ? "" : " for the configured subjects"));
  }
  if (!spec.normalize_mean.empty()) {
    if (spec.normalize_mean.size() != ds.cols) {
      return InvalidArgument("dataset '" + spec.name + "': normalize has " +
                             std::to_string(spec.normalize_mean.size()) + " entries for " +
                             std::to_string(ds.cols) + " features");
    }
    for (size_t r = 0; r < ds.rows; ++r) {
      for (size_t c = 0; c < ds.cols; ++c) {
        float& x = ds.features[r * ds.cols + c];
        const double v = (x - spec.normalize_mean[c]) / spec.normalize_std[c];
        if (!(std::fabs(v) <= std::numeric_limits<float>::max())) {
          return InvalidArgument("dataset '" + spec.name + "': feature " + std::to_string(c) +
                                 " of row " + std::to_string(r + 1) +
                                 " is beyond the float range once normalized (std " +
                                 std::to_string(spec.normalize_std[c]) + ")");
        }
        x = static_cast<float>(v);
      }
    }
  }
  return ds;
}

}  // namespace

StatusOr<Dataset> LoadDataset(const DatasetSpec& spec) {
  Dataset ds;
  size_t skipped = 0;
  for (const auto& f : spec.files) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(f.path));
    RETURN_IF_ERROR(AppendRows(f, text, spec, &ds, &skipped));
  }
  return FinishDataset(spec, std::move(ds), skipped);
}

StatusOr<Dataset> ParseDataset(const DatasetSpec& spec, const std::vector<std::string>& texts) {
  if (texts.size() != spec.files.size()) {
    return InvalidArgument("dataset '" + spec.name + "': " + std::to_string(texts.size()) +
                           " file contents for " + std::to_string(spec.files.size()) + " files");
  }
  Dataset ds;
  size_t skipped = 0;
  for (size_t i = 0; i < spec.files.size(); ++i) {
    RETURN_IF_ERROR(AppendRows(spec.files[i], texts[i], spec, &ds, &skipped));
  }
  return FinishDataset(spec, std::move(ds), skipped);
}

void SplitValidation(const Dataset& all, double fraction, uint64_t seed, Dataset* train,
                     Dataset* val) {
  std::vector<size_t> order(all.rows);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  size_t nval = static_cast<size_t>(std::floor(fraction * static_cast<double>(all.rows)));
  if (nval >= all.rows) nval = all.rows - 1;  // keep at least one training row
  for (Dataset* d : {train, val}) {
    *d = Dataset{};
    d->cols = all.cols;
  }
  for (size_t i = 0; i < all.rows; ++i) {
    Dataset* d = i < nval ? val : train;
    size_t r = order[i];
    d->features.insert(d->features.end(), all.features.begin() + r * all.cols,
                       all.features.begin() + (r + 1) * all.cols);
    d->labels.push_back(all.labels[r]);
    if (!all.subjects.empty()) d->subjects.push_back(all.subjects[r]);
    d->rows++;
  }
}

}  // namespace fleet
