// Append-only, hash-chained audit trail (one JSON object per line). Each record carries the
// BLAKE2b-256 hash of the previous record ("prev") and its own ("hash", over prev and the
// record's canonical JSON without "hash"), so any edit, deletion or reordering breaks the chain
// at a line VerifyAuditLog names. Records hold who did what and when: identities, ids, counts,
// reasons. Never secrets (tokens, keys), personal data or model updates.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace fleet {

class AuditLog {
 public:
  // Opens (creating) `path`; refuses a file whose chain is already broken.
  static StatusOr<std::unique_ptr<AuditLog>> Open(const std::string& path);
  ~AuditLog();

  // Appends {"seq", "time", "event", "actor", ...fields, "prev", "hash"} and fsyncs.
  // Thread-safe.
  Status Append(const std::string& event, const std::string& actor, nlohmann::json fields = {});

 private:
  AuditLog(int fd, uint64_t seq, std::string last_hash)
      : fd_(fd), seq_(seq), last_hash_(std::move(last_hash)) {}
  std::mutex mu_;
  int fd_;
  uint64_t seq_;           // records so far
  std::string last_hash_;  // hex; "" before the first record
};

struct AuditVerification {
  uint64_t records = 0;  // intact records before the first broken one
  bool ok = true;
  uint64_t broken_line = 0;  // 1-based
  std::string reason;
  std::string last_hash;
};

// Walks the chain of `path`.
StatusOr<AuditVerification> VerifyAuditLog(const std::string& path);

}  // namespace fleet
