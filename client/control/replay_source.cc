#include "client/control/replay_source.h"

#include <nlohmann/json.hpp>

#include <chrono>

#include "client/data_source.h"
#include "common/clock.h"
#include "common/file_util.h"

namespace fleet::control {

StatusOr<std::unique_ptr<ReplaySource>> ReplaySource::Open(ReplayOptions options,
                                                           const SensorSchema& schema,
                                                           MessageFn fn) {
  if (!FileExists(options.path)) {
    return NotFound("replay file " + options.path + " cannot be opened");
  }
  // The project's one CSV loader: header names, quoting, R's unnamed row-id column, and errors
  // that name file:line and column.
  DataFileSpec file;
  file.path = options.path;
  file.csv = true;
  file.header = true;
  for (const FieldSpec& f : schema.fields) {
    if (f.size != 1) {
      return InvalidArgument("replay: array field '" + f.name + "' cannot come from a CSV column");
    }
    file.features.push_back(f.name);
  }
  file.label = schema.label_field;  // empty: the file needs no label column
  DatasetSpec spec;
  spec.name = "replay";
  spec.files.push_back(file);
  StatusOr<Dataset> data = LoadDataset(spec);
  if (!data.ok()) return Status(data.status().code(), "replay: " + data.status().message());
  std::unique_ptr<ReplaySource> src(new ReplaySource(std::move(options), std::move(fn)));
  for (size_t r = 0; r < data->rows; ++r) {
    nlohmann::json row = nlohmann::json::object();
    for (size_t c = 0; c < data->cols; ++c) {
      row[schema.fields[c].name] = data->features[r * data->cols + c];
    }
    if (!schema.label_field.empty()) row[schema.label_field] = data->labels[r];
    src->rows_.push_back(std::move(row));
  }
  src->timestamp_field_ = schema.timestamp_field;
  return src;
}

ReplaySource::~ReplaySource() { Stop(); }

void ReplaySource::Start() { thread_ = std::thread([this] { Run(); }); }

void ReplaySource::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void ReplaySource::Run() {
  const auto period = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(1.0 / options_.rate_hz));
  auto next = std::chrono::steady_clock::now();
  do {
    for (nlohmann::json& row : rows_) {
      if (stop_) return;
      std::this_thread::sleep_until(next);
      next += period;
      if (!timestamp_field_.empty()) row[timestamp_field_] = UnixMillis();
      fn_(options_.topic, row.dump());
      ++sent_;
    }
  } while (options_.loop && !stop_);
  done_ = true;
}

}  // namespace fleet::control
