#include "client/unmask_history.h"

#include <sodium.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <sstream>

#include "common/file_util.h"
#include "crypto/secret.h"

namespace fleet {
namespace {

// First line of the file; a different one (another version, garbage, an empty file) is refused.
constexpr char kHeader[] = "fleetfl secagg unmask record v1: job_id model_blake2b round unix_ms";

bool IsHex64(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

bool IsJobId(const std::string& s) {
  return !s.empty() && s.size() <= 128 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

bool ParseUint(const std::string& s, uint64_t max, uint64_t* out) {
  if (s.empty() || s.size() > 19) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > max) return false;
  *out = v;
  return true;
}

}  // namespace

std::string ModelVersionHash(std::string_view parameters) {
  uint8_t out[32];
  crypto_generichash(out, sizeof(out), reinterpret_cast<const uint8_t*>(parameters.data()),
                     parameters.size(), nullptr, 0);
  return crypto::ToHex(out, sizeof(out));
}

StatusOr<UnmaskHistory> UnmaskHistory::Load(std::string path) {
  UnmaskHistory h(std::move(path));
  if (h.path_.empty() || !FileExists(h.path_)) return h;
  auto bad = [&](size_t line, const std::string& what) {
    return DataLoss(h.path_ + ":" + std::to_string(line) + ": " + what +
                    "; this file records the secure sums this device helped reveal, and without "
                    "it the device refuses secure aggregation");
  };
  StatusOr<std::string> text = ReadFile(h.path_);
  if (!text.ok()) {
    return DataLoss("cannot read " + h.path_ + ": " + text.status().message() +
                    "; without it the device refuses secure aggregation");
  }
  if (text->empty() || text->back() != '\n') return bad(1, "truncated (no final newline)");
  std::istringstream in(*text);
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (n == 1) {
      if (line != kHeader) return bad(n, "not an unmask record (unexpected first line)");
      continue;
    }
    std::istringstream fields(line);
    Entry e;
    std::string round, ms, extra;
    if (!(fields >> e.job_id >> e.model_hash >> round >> ms) || (fields >> extra)) {
      return bad(n, "expected 4 fields: job_id model_blake2b round unix_ms");
    }
    if (!IsJobId(e.job_id)) return bad(n, "malformed job id");
    if (!IsHex64(e.model_hash)) return bad(n, "model hash is not 64 lowercase hex digits");
    uint64_t r = 0, t = 0;
    if (!ParseUint(round, UINT32_MAX, &r)) return bad(n, "malformed round");
    if (!ParseUint(ms, INT64_MAX, &t)) return bad(n, "malformed time");
    e.round = static_cast<uint32_t>(r);
    e.unix_ms = static_cast<int64_t>(t);
    h.entries_.push_back(std::move(e));
  }
  return h;
}

bool UnmaskHistory::Contains(const std::string& job_id, const std::string& model_hash) const {
  return std::any_of(entries_.begin(), entries_.end(), [&](const Entry& e) {
    return e.job_id == job_id && e.model_hash == model_hash;
  });
}

std::optional<std::string> UnmaskHistory::JobThatRevealed(const std::string& model_hash) const {
  for (const Entry& e : entries_) {
    if (e.model_hash == model_hash) return e.job_id;
  }
  return std::nullopt;
}

Status UnmaskHistory::Record(const std::string& job_id, const std::string& model_hash,
                             uint32_t round, int64_t unix_ms) {
  if (!IsJobId(job_id)) return InvalidArgument("job id '" + job_id + "' cannot be recorded");
  if (!IsHex64(model_hash)) return InvalidArgument("model hash must be 64 lowercase hex digits");
  if (Contains(job_id, model_hash)) return OkStatus();
  std::vector<Entry> next = entries_;
  next.push_back({job_id, model_hash, round, std::max<int64_t>(0, unix_ms)});
  Prune(&next);
  if (!path_.empty()) RETURN_IF_ERROR(WriteFileAtomically(path_, Encode(next), 0600));
  entries_ = std::move(next);
  return OkStatus();
}

std::string UnmaskHistory::Encode(const std::vector<Entry>& entries) {
  std::string out = std::string(kHeader) + "\n";
  for (const Entry& e : entries) {
    out += e.job_id + " " + e.model_hash + " " + std::to_string(e.round) + " " +
           std::to_string(e.unix_ms) + "\n";
  }
  return out;
}

void UnmaskHistory::Prune(std::vector<Entry>* entries) {
  // Newest position of each job: the jobs kept are the kMaxJobs seen most recently.
  std::map<std::string, size_t> newest, count;
  for (size_t i = 0; i < entries->size(); ++i) newest[(*entries)[i].job_id] = i;
  std::vector<size_t> order;
  for (const auto& [job, i] : newest) order.push_back(i);
  std::sort(order.rbegin(), order.rend());
  std::map<std::string, bool> keep_job;
  for (size_t k = 0; k < order.size(); ++k) {
    keep_job[(*entries)[order[k]].job_id] = k < kMaxJobs;
  }
  std::vector<Entry> kept;
  for (size_t i = entries->size(); i-- > 0;) {  // newest first, so per-job counts keep the newest
    Entry& e = (*entries)[i];
    if (!keep_job[e.job_id] || ++count[e.job_id] > kPerJob) continue;
    kept.push_back(std::move(e));
  }
  std::reverse(kept.begin(), kept.end());
  *entries = std::move(kept);
}

}  // namespace fleet
