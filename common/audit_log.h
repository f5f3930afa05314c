// Append-only, hash-chained and MACed audit trail (one JSON object per line). Each record
// carries the BLAKE2b-256 hash of the previous record ("prev"), its own ("hash", over prev and
// the record's canonical JSON without "hash" and "mac") and a MAC ("mac": keyed BLAKE2b-256 of
// its hash under the log's 32-byte key, which is kept outside the log's directory). Because the
// hash chains every earlier record, the newest MAC authenticates the whole prefix: whoever can
// write the file but not read the key can neither edit a record (even recomputing the unkeyed
// hashes) nor append one. Cutting records off the end keeps a valid chain, so the head (seq,
// hash, mac) is also recorded outside the file after every append (the coordinator's database;
// an operator can keep copies off the host) and Open compares the two.
//
// Records written before the log had a key have no "mac"; they form a prefix that the first
// MACed record (the "audit_keyed" record Open appends, naming the unkeyed head) pins.
//
// Records hold who did what and when: identities, ids, counts, reasons. Never secrets (tokens,
// keys), personal data or model updates.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/status.h"

namespace fleet {

inline constexpr size_t kAuditKeyBytes = 32;

// The MAC key of an audit log. Wiped on destruction; movable, not copyable.
class AuditKey {
 public:
  static AuditKey Generate();  // from libsodium's CSPRNG
  static StatusOr<AuditKey> FromBytes(const std::string& bytes);
  AuditKey(AuditKey&& other) noexcept;
  AuditKey& operator=(AuditKey&& other) noexcept;
  AuditKey(const AuditKey&) = delete;
  AuditKey& operator=(const AuditKey&) = delete;
  ~AuditKey();
  const unsigned char* data() const { return bytes_.data(); }
  AuditKey Copy() const;  // explicit, so that a key is never duplicated by accident

 private:
  AuditKey() = default;
  std::array<unsigned char, kAuditKeyBytes> bytes_{};
};

// Reads a key file: NotFound naming `path` when it is missing, InvalidArgument when it is not
// exactly 32 bytes.
StatusOr<AuditKey> LoadAuditKey(const std::string& path);
// Writes a fresh random key to `path` (0600), never replacing one: AlreadyExists.
Status CreateAuditKey(const std::string& path);

// The newest record of a log, as recorded outside it. seq 0: an empty log.
struct AuditHead {
  uint64_t seq = 0;
  std::string hash;  // hex BLAKE2b-256 of the record
  std::string mac;   // hex MAC of `hash`; "" for a record written before the log had a key
  bool operator==(const AuditHead& o) const {
    return seq == o.seq && hash == o.hash && mac == o.mac;
  }
};
std::string DescribeAuditHead(const AuditHead& head);  // "record 12 (hash 3fa1...)"

struct AuditVerification {
  uint64_t records = 0;  // intact records before the first broken one
  bool ok = true;
  uint64_t broken_line = 0;  // 1-based
  std::string reason;
  AuditHead head;             // the last intact record
  uint64_t keyed = 0;         // intact records that carry a MAC
  uint64_t macs_checked = 0;  // of those, verified with the key (0 without one)
  // Broken only because the last line lacks its newline: an append interrupted by a crash.
  bool torn_tail = false;
  uint64_t intact_bytes = 0;  // file offset just after the last intact record
  AuditHead remembered;       // the record `remember_seq` asked for, if the log reaches it
};

// Walks the chain of `path`. With `key`, every MAC is checked too. `remember_seq` > 0 keeps that
// record's head in `remembered`, for CompareAuditHead.
StatusOr<AuditVerification> VerifyAuditLog(const std::string& path, const AuditKey* key = nullptr,
                                           uint64_t remember_seq = 0);

// How a log stands against a head recorded elsewhere.
enum class AuditHeadMatch {
  kSame,        // the log ends at the recorded head
  kAheadByOne,  // one record more: a crash between appending it and recording the new head
  kAhead,       // several more: the recorded head is old (or the log is being appended to)
  kTruncated,   // the log ends before the recorded head: records were cut off (or rolled back)
  kDiverged,    // the recorded head's record differs: the log was rewritten or replaced
};
struct AuditHeadComparison {
  AuditHeadMatch match = AuditHeadMatch::kSame;
  uint64_t ahead = 0;       // records after the recorded head
  std::string explanation;  // one sentence naming both heads
};
// `v` must come from VerifyAuditLog(..., expected.seq) and be ok.
AuditHeadComparison CompareAuditHead(const AuditVerification& v, const AuditHead& expected);

struct AuditLogOptions {
  std::string path;
  // MACs every new record and checks every existing one. Required.
  std::optional<AuditKey> key;
  // The head recorded outside the file after the last append (the coordinator's database);
  // nullopt when none was recorded yet (a new state directory, or a database from a version
  // that did not keep it).
  std::optional<AuditHead> recorded;
  // Records the new head outside the file once its record is durable in the file (and from
  // Open when the recorded head was missing or one behind). Called under the log's lock.
  std::function<Status(const AuditHead&)> record_head;
  // What an operator can do to start a new chain; ends every refusal of Open.
  std::string reset_hint;
  // Whether records without MACs may be pinned as history from before the key (the first start
  // with a key). Once a log has been opened with its key this is false (the coordinator keeps a
  // marker beside the key), so a log rewritten without MACs and a head recorded without one (a
  // "downgrade") are refused rather than pinned.
  bool allow_unkeyed_history = true;
};

// Thread-safe.
class AuditLog {
 public:
  // Opens (creating, 0600) `path` and verifies it (MACs included). Refused (FailedPrecondition,
  // nothing changed, the message says what is wrong and what the operator can do): a broken
  // chain or MAC; a log that ends before the recorded head (truncated or rolled back) or whose
  // record at the recorded head differs (rewritten); a log several records ahead of the recorded
  // head (the database was rolled back); MACed records without any recorded head (the database
  // was replaced). Repaired, with a warning: a log one record ahead (crash between appending and
  // recording: the head is recorded now) and an incomplete last line when the records before it
  // end exactly at the recorded head (an interrupted append; the partial line is cut off). A log
  // whose records all predate the key gets an "audit_keyed" record naming its unkeyed head.
  static StatusOr<std::unique_ptr<AuditLog>> Open(AuditLogOptions options);
  ~AuditLog();

  // Appends {"seq", "time_ms", "event", "actor", ...fields, "prev", "hash", "mac"}, fdatasyncs
  // it, then records the new head (options.record_head). An error means the record is not in
  // the log (the file is cut back to the previous record) and every later Append fails too,
  // until the coordinator restarts and re-verifies the file: a log that lost a write is not
  // trusted with more. A failure to record the head is logged and retried before the next
  // record (so the file is never more than one record ahead); the record itself stands.
  // Failpoint `audit.append_fail.EVENT` makes the append of EVENT fail as a write error would;
  // `audit.before_head_update@SEQ` kills the process between the two steps.
  Status Append(const std::string& event, const std::string& actor, nlohmann::json fields = {});

  // OK while appends can succeed; the error of the failed append once the log refuses records.
  Status Ready() const;
  AuditHead head() const;
  // What Open found: records, MACs, and any repair it made ("" if none).
  const AuditVerification& opened() const { return opened_; }
  const std::string& repaired() const { return repaired_; }

 private:
  AuditLog(int fd, AuditLogOptions options, AuditVerification opened);
  Status AppendLocked(const std::string& event, const std::string& actor, nlohmann::json fields);

  mutable std::mutex mu_;
  const int fd_;
  AuditLogOptions options_;
  const AuditVerification opened_;
  std::string repaired_;
  uint64_t size_;                 // bytes of intact records; guarded by mu_
  AuditHead head_;                // guarded by mu_
  bool head_unrecorded_ = false;  // record_head failed for head_; guarded by mu_
  Status failed_;                 // set by the first failed append; guarded by mu_
};

}  // namespace fleet
