// Fuzz target: CSV and whitespace-separated data rows (client/data_source.h ParseDataset), what a
// device reads from the files its sensors or an operator's tools write, and what the control
// loop's replay source reads.
//
// Input: bytes 0-3 pick the file format and column mapping (CSV or whitespace, header, features
// by index, by name or "rest", label and subject columns, a subject filter, label offset,
// normalization, whether bad rows are skipped); the rest is the file's contents. Checks beyond
// "no crash": an accepted dataset is rectangular (rows x cols features, one label per row, one
// subject per row or none), every feature and label is finite, and every kept subject passes
// the filter.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "client/data_source.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fleet;
  fuzz::Input in(data, size);
  const uint8_t a = in.Byte(), b = in.Byte(), c = in.Byte(), d = in.Byte();
  DataFileSpec f;
  f.path = "sensor.csv";
  f.csv = (a & 1) == 0;
  f.header = (a & 2) != 0;
  switch ((a >> 2) & 3) {
    case 0:
      f.features_rest = true;
      break;
    case 1:
      f.features = {"0", "1"};
      break;
    case 2:
      f.features = {"x", "y"};
      break;
    default:  // an index, sometimes one past any size_t
      f.features = {(b & 0x0f) == 0x0f ? "99999999999999999999" : std::to_string(b % 8)};
      break;
  }
  switch ((a >> 4) & 3) {
    case 0:
      break;
    case 1:
      f.label = "2";
      break;
    case 2:
      f.label = "label";
      break;
    default:
      f.label = std::to_string(c % 8);
      break;
  }
  if (a & 0x40) f.subject = (a & 0x80) ? "subject" : std::to_string((c >> 3) % 8);
  DatasetSpec spec;
  spec.name = "fuzz";
  spec.skip_bad_rows = (b & 0x80) != 0;
  if (b & 0x40) spec.subjects = {1, 3, int64_t{d}};
  spec.label_offset = (b & 0x20) ? -1.0 : 0.0;
  if (b & 0x10) {
    const size_t cols = f.features_rest ? (d % 6) + 1 : f.features.size();
    spec.normalize_mean.assign(cols, 1.0);
    spec.normalize_std.assign(cols, (d & 0x80) ? 1e-3 : 2.0);
  }
  spec.files.push_back(f);

  StatusOr<Dataset> ds = ParseDataset(spec, {std::string(in.Rest())});
  if (!ds.ok()) {
    FUZZ_CHECK(!ds.status().message().empty(), "a refusal without a reason");
    return 0;
  }
  FUZZ_CHECK(ds->rows > 0 && ds->cols > 0, "accepted an empty dataset");
  FUZZ_CHECK(ds->features.size() == ds->rows * ds->cols && ds->labels.size() == ds->rows,
             "dataset is not rectangular");
  FUZZ_CHECK(ds->subjects.empty() || ds->subjects.size() == ds->rows, "subjects do not match rows");
  FUZZ_CHECK(f.subject.empty() == ds->subjects.empty(), "subjects without a subject column");
  for (float x : ds->features) FUZZ_CHECK(std::isfinite(x), "non-finite feature accepted");
  for (float y : ds->labels) FUZZ_CHECK(std::isfinite(y), "non-finite label accepted");
  for (int64_t s : ds->subjects) {
    FUZZ_CHECK(spec.subjects.empty() ||
                   std::find(spec.subjects.begin(), spec.subjects.end(), s) != spec.subjects.end(),
               "subject %lld passed the filter", static_cast<long long>(s));
  }
  Dataset train, val;
  SplitValidation(*ds, 0.25, 7, &train, &val);
  FUZZ_CHECK(train.rows + val.rows == ds->rows && train.rows > 0, "split lost rows");
  return 0;
}
