// The device's own record of the secure sums it helped reveal: each (job, global model) whose
// unmask shares it sent. The difference of two sums over nearly the same inputs exposes single
// devices' updates, and this device's update over one model is nearly the same each time it
// trains, so once it helped reveal a sum over a model it refuses to take part in another secure
// aggregation over that model, in any job, whatever the coordinator asks (docs/security.md, "Secure
// aggregation"). The coordinator keeps the same rule on its side; this record is what holds
// when it does not.
//
// Kept in `state_dir/secagg-unmasked` (0600), rewritten atomically and fsynced before the
// shares are sent, so it survives a crash or power cut at any point. Bounded: the newest
// kPerJob models per job and the kMaxJobs jobs with the newest entries. A file that cannot be
// read or parsed is an error naming it: the device then cannot know what it revealed, and its
// caller refuses secure aggregation rather than forget.
//
// Thread-compatible: the client's main loop owns it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace fleet {

// Hex BLAKE2b-256 of a task's encoded parameters: with the job id, the model version.
std::string ModelVersionHash(std::string_view parameters);

class UnmaskHistory {
 public:
  static constexpr size_t kPerJob = 32;
  static constexpr size_t kMaxJobs = 32;
  static constexpr char kFileName[] = "secagg-unmasked";

  // Reads `path` (absent: nothing revealed yet). An empty path keeps the record in memory only
  // (--insecure without a state directory).
  static StatusOr<UnmaskHistory> Load(std::string path);

  bool Contains(const std::string& job_id, const std::string& model_hash) const;
  // The job of the first recorded sum over this model in any job, if any: a second job over the
  // same model (the same spec and seed, or one started from another's model) is no different
  // from a retry.
  std::optional<std::string> JobThatRevealed(const std::string& model_hash) const;
  // Adds the pair and makes it durable before returning. On error nothing changes: the caller
  // must not send its shares.
  Status Record(const std::string& job_id, const std::string& model_hash, uint32_t round,
                int64_t unix_ms);

  const std::string& path() const { return path_; }
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string job_id;
    std::string model_hash;
    uint32_t round = 0;
    int64_t unix_ms = 0;
  };
  explicit UnmaskHistory(std::string path) : path_(std::move(path)) {}
  static std::string Encode(const std::vector<Entry>& entries);
  // Drops the oldest entries beyond the bounds.
  static void Prune(std::vector<Entry>* entries);

  std::string path_;
  std::vector<Entry> entries_;  // oldest first
};

}  // namespace fleet
