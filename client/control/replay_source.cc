#include "client/control/replay_source.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <sstream>

#include "common/clock.h"

namespace fleet::control {

namespace {

std::vector<std::string> SplitCsv(const std::string& line) {
  std::vector<std::string> out;
  std::string cell;
  std::istringstream in(line);
  while (std::getline(in, cell, ',')) {
    if (!cell.empty() && cell.back() == '\r') cell.pop_back();
    if (cell.size() >= 2 && cell.front() == '"' && cell.back() == '"') {
      cell = cell.substr(1, cell.size() - 2);
    }
    out.push_back(cell);
  }
  return out;
}

}  // namespace

StatusOr<std::unique_ptr<ReplaySource>> ReplaySource::Open(ReplayOptions options,
                                                           const SensorSchema& schema,
                                                           MessageFn fn) {
  std::ifstream in(options.path);
  if (!in) return NotFound("replay file " + options.path + " cannot be opened");
  std::string line;
  if (!std::getline(in, line)) return InvalidArgument("replay file " + options.path + " is empty");
  std::vector<std::string> header = SplitCsv(line);
  // Data rows of files like UCI Occupancy carry a row id the header does not name.
  std::vector<std::pair<std::string, size_t>> columns;  // json key, column
  auto find = [&](const std::string& name) -> StatusOr<size_t> {
    for (size_t i = 0; i < header.size(); ++i) {
      if (header[i] == name) return i;
    }
    return InvalidArgument("replay file " + options.path + " has no column '" + name + "'");
  };
  for (const FieldSpec& f : schema.fields) {
    if (f.size != 1) {
      return InvalidArgument("replay: array field '" + f.name + "' cannot come from a CSV column");
    }
    ASSIGN_OR_RETURN(size_t c, find(f.name));
    columns.emplace_back(f.name, c);
  }
  if (!schema.label_field.empty()) {
    ASSIGN_OR_RETURN(size_t c, find(schema.label_field));
    columns.emplace_back(schema.label_field, c);
  }
  std::unique_ptr<ReplaySource> src(new ReplaySource(std::move(options), std::move(fn)));
  size_t lineno = 1;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    std::vector<std::string> cells = SplitCsv(line);
    const size_t shift = cells.size() == header.size() + 1 ? 1 : 0;
    if (cells.size() != header.size() + shift) {
      return InvalidArgument(src->options_.path + ":" + std::to_string(lineno) + ": " +
                             std::to_string(cells.size()) + " columns, header has " +
                             std::to_string(header.size()));
    }
    nlohmann::json row = nlohmann::json::object();
    for (const auto& [key, c] : columns) {
      const std::string& cell = cells[c + shift];
      char* end = nullptr;
      double v = std::strtod(cell.c_str(), &end);
      if (cell.empty() || *end != '\0') {
        return InvalidArgument(src->options_.path + ":" + std::to_string(lineno) + ": column '" +
                               key + "' is not a number");
      }
      row[key] = v;
    }
    src->rows_.push_back(std::move(row));
  }
  if (src->rows_.empty()) return InvalidArgument("replay file " + src->options_.path + " has no rows");
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
