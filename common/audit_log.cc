#include "common/audit_log.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "common/clock.h"
#include "common/failpoint.h"
#include "common/file_util.h"
#include "common/log.h"

namespace fleet {
namespace {

constexpr char kMacDomain[] = "fleetfl audit record mac v1\n";
constexpr char kKeyedEvent[] = "audit_keyed";

std::string Hex(const unsigned char* p, size_t n) {
  std::string hex(2 * n + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), p, n);
  hex.pop_back();
  return hex;
}

std::string Hash(const std::string& prev, const std::string& canonical) {
  std::string input = prev + "\n" + canonical;
  unsigned char h[32];
  crypto_generichash(h, sizeof h, reinterpret_cast<const unsigned char*>(input.data()),
                     input.size(), nullptr, 0);
  return Hex(h, sizeof h);
}

std::string Mac(const AuditKey& key, const std::string& hash) {
  crypto_generichash_state st;
  unsigned char m[32];
  crypto_generichash_init(&st, key.data(), kAuditKeyBytes, sizeof m);
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(kMacDomain),
                            sizeof kMacDomain - 1);
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(hash.data()), hash.size());
  crypto_generichash_final(&st, m, sizeof m);
  return Hex(m, sizeof m);
}

// One record as the log stores it. Invalid UTF-8 in a field (another party's text cut by bytes)
// becomes U+FFFD instead of an exception that would end the process.
std::string Dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool SameMac(const std::string& a, const std::string& b) {
  return a.size() == b.size() && sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

struct Chain {
  uint64_t seq = 0;    // records so far
  std::string prev;    // hash of the last one
  bool keyed = false;  // a record with a MAC was seen: every later one needs one
};

// Checks one line against the chain so far; returns the reason it breaks it, or "".
std::string CheckRecord(const std::string& line, const Chain& chain, const AuditKey* key,
                        AuditHead* head) {
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return "not a JSON object";
  // The hash covers the parsed record, so the line must be exactly what Append writes for it:
  // otherwise duplicate keys (readers differ on which one wins), reordered keys or whitespace
  // could be changed without the key.
  if (Dump(j) != line) {
    return "not in the form the log writes (a record was edited: duplicate or reordered keys, "
           "or whitespace)";
  }
  if (!j.contains("hash") || !j["hash"].is_string()) return "no hash";
  if (!j.contains("prev") || !j["prev"].is_string()) return "no prev";
  if (!j.contains("seq") || !j["seq"].is_number_unsigned()) return "no seq";
  const uint64_t expected_seq = chain.seq + 1;
  if (j["seq"].get<uint64_t>() != expected_seq) {
    return "seq " + std::to_string(j["seq"].get<uint64_t>()) + " where " +
           std::to_string(expected_seq) + " was expected (a record was removed or reordered)";
  }
  if (j["prev"].get<std::string>() != chain.prev) {
    return "prev does not match the previous record's hash (a record was removed or reordered)";
  }
  const bool has_mac = j.contains("mac");
  if (has_mac && !j["mac"].is_string()) return "mac is not a string";
  if (chain.keyed && !has_mac) {
    return "no MAC, although the records before it carry one (a MAC was removed)";
  }
  if (!chain.keyed && has_mac && expected_seq != 1 &&
      !(j.contains("event") && j["event"] == kKeyedEvent)) {
    return "the first record with a MAC is neither record 1 nor the audit_keyed record (MACs "
           "were removed from the records before it)";
  }
  head->seq = expected_seq;
  head->hash = j["hash"].get<std::string>();
  head->mac = has_mac ? j["mac"].get<std::string>() : "";
  j.erase("hash");
  j.erase("mac");
  if (Hash(chain.prev, Dump(j)) != head->hash)
    return "hash does not match the record (it was edited)";
  if (key != nullptr && has_mac && !SameMac(Mac(*key, head->hash), head->mac)) {
    return "MAC does not verify with the key (the record was rewritten with a recomputed hash, "
           "or this is not the log's key)";
  }
  return "";
}

std::string Short(const std::string& hash) { return hash.substr(0, 16); }

}  // namespace

AuditKey AuditKey::Generate() {
  AuditKey k;
  randombytes_buf(k.bytes_.data(), k.bytes_.size());
  return k;
}

StatusOr<AuditKey> AuditKey::FromBytes(const std::string& bytes) {
  if (bytes.size() != kAuditKeyBytes) {
    return InvalidArgument("an audit key is " + std::to_string(kAuditKeyBytes) + " bytes, not " +
                           std::to_string(bytes.size()));
  }
  AuditKey k;
  std::memcpy(k.bytes_.data(), bytes.data(), kAuditKeyBytes);
  return k;
}

AuditKey AuditKey::Copy() const {
  AuditKey k;
  k.bytes_ = bytes_;
  return k;
}

AuditKey::AuditKey(AuditKey&& other) noexcept : bytes_(other.bytes_) {
  sodium_memzero(other.bytes_.data(), other.bytes_.size());
}

AuditKey& AuditKey::operator=(AuditKey&& other) noexcept {
  if (this != &other) {
    bytes_ = other.bytes_;
    sodium_memzero(other.bytes_.data(), other.bytes_.size());
  }
  return *this;
}

AuditKey::~AuditKey() { sodium_memzero(bytes_.data(), bytes_.size()); }

StatusOr<AuditKey> LoadAuditKey(const std::string& path) {
  if (!FileExists(path)) return NotFound("audit MAC key " + path + " does not exist");
  StatusOr<std::string> bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  StatusOr<AuditKey> key = AuditKey::FromBytes(*bytes);
  sodium_memzero(bytes->data(), bytes->size());
  if (!key.ok()) return InvalidArgument("audit MAC key " + path + ": " + key.status().message());
  return key;
}

Status CreateAuditKey(const std::string& path) {
  std::string bytes(kAuditKeyBytes, '\0');
  randombytes_buf(bytes.data(), bytes.size());
  Status s = CreateFileAtomically(path, bytes, 0600);
  sodium_memzero(bytes.data(), bytes.size());
  return s;
}

std::string DescribeAuditHead(const AuditHead& head) {
  if (head.seq == 0) return "no record";
  return "record " + std::to_string(head.seq) + " (hash " + Short(head.hash) + "...)";
}

StatusOr<AuditVerification> VerifyAuditLog(const std::string& path, const AuditKey* key,
                                           uint64_t remember_seq) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open audit log " + path + ": " + std::strerror(errno));
  AuditVerification v;
  Chain chain;
  std::string line;
  uint64_t n = 0, offset = 0;
  while (std::getline(in, line)) {
    ++n;
    // getline stops at end of file without a newline: that line was never completed.
    const bool complete = !in.eof();
    AuditHead head;
    std::string why = complete ? CheckRecord(line, chain, key, &head)
                               : "incomplete last record (no newline: an interrupted append?)";
    if (!why.empty()) {
      v.ok = false;
      v.broken_line = n;
      v.reason = why;
      v.torn_tail = !complete;
      break;
    }
    offset += line.size() + 1;
    chain.seq = head.seq;
    chain.prev = head.hash;
    if (!head.mac.empty()) {
      chain.keyed = true;
      ++v.keyed;
      if (key != nullptr) ++v.macs_checked;
    }
    if (head.seq == remember_seq) v.remembered = head;
    v.head = std::move(head);
    ++v.records;
  }
  if (in.bad()) return Internal("read error on audit log " + path);
  v.intact_bytes = offset;
  return v;
}

AuditHeadComparison CompareAuditHead(const AuditVerification& v, const AuditHead& expected) {
  AuditHeadComparison c;
  const std::string ends = "the log ends at " + DescribeAuditHead(v.head);
  if (v.records < expected.seq) {
    c.match = AuditHeadMatch::kTruncated;
    c.explanation = ends + " but the recorded head is " + DescribeAuditHead(expected) +
                    ": records " + std::to_string(v.records + 1) + ".." +
                    std::to_string(expected.seq) +
                    " were removed (the log was truncated or replaced by an older copy)";
    return c;
  }
  if (expected.seq > 0 && (v.remembered.seq != expected.seq || v.remembered.hash != expected.hash ||
                           (!expected.mac.empty() && !SameMac(v.remembered.mac, expected.mac)))) {
    c.match = AuditHeadMatch::kDiverged;
    c.explanation = "record " + std::to_string(expected.seq) + " of the log (hash " +
                    Short(v.remembered.hash) + "...) is not the recorded head " +
                    DescribeAuditHead(expected) + ": the log was rewritten or replaced";
    return c;
  }
  c.ahead = v.records - expected.seq;
  c.match = c.ahead == 0   ? AuditHeadMatch::kSame
            : c.ahead == 1 ? AuditHeadMatch::kAheadByOne
                           : AuditHeadMatch::kAhead;
  c.explanation = c.ahead == 0
                      ? ends + ", the recorded head"
                      : ends + ", " + std::to_string(c.ahead) +
                            " record(s) after the recorded head " + DescribeAuditHead(expected);
  return c;
}

StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(AuditLogOptions options) {
  if (!options.key) return InvalidArgument("an audit log needs its MAC key");
  const std::string path = options.path;
  const std::string hint = options.reset_hint.empty() ? "" : "; " + options.reset_hint;
  auto refuse = [&](const std::string& what) {
    return FailedPrecondition("audit log " + path + ": " + what + hint);
  };
  // O_NOFOLLOW: a symlink planted at the name is refused, never chmodded or appended to.
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Unavailable("cannot open audit log " + path + ": " + std::strerror(errno));
  auto fail = [&](Status s) {
    ::close(fd);
    return s;
  };
  struct stat st {};
  if (::fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
    return fail(FailedPrecondition("audit log " + path + " is not a regular file"));
  }
  if (::fstat(fd, &st) == 0 && (st.st_mode & 077) != 0) {
    if (::fchmod(fd, 0600) != 0) return fail(Internal("cannot chmod 0600 " + path));
    FLEET_LOG(Warn) << "audit log " << path << " was readable by others; tightened to 0600";
  }
  const uint64_t recorded_seq = options.recorded ? options.recorded->seq : 0;
  StatusOr<AuditVerification> verified = VerifyAuditLog(path, &*options.key, recorded_seq);
  if (!verified.ok()) return fail(verified.status());
  AuditVerification v = std::move(verified).value();
  std::string repaired;
  if (!v.ok) {
    // An append cut short by a crash or power loss leaves a partial last line. It was never
    // acknowledged when the head recorded before it is exactly the intact prefix's.
    if (v.torn_tail && options.recorded && v.head == *options.recorded) {
      if (::ftruncate(fd, static_cast<off_t>(v.intact_bytes)) != 0 || ::fsync(fd) != 0) {
        return fail(Internal("cannot cut the incomplete last record off audit log " + path + ": " +
                             std::strerror(errno)));
      }
      repaired =
          "cut off an incomplete last line (an append interrupted by a crash; the "
          "database shows it was never completed)";
      v.ok = true;
      v.torn_tail = false;
      v.broken_line = 0;
      v.reason.clear();
    } else {
      return fail(refuse("broken at line " + std::to_string(v.broken_line) + ": " + v.reason +
                         " (" + std::to_string(v.records) +
                         " records before it are intact; keep the file as evidence)"));
    }
  }
  bool record_now = false;
  if (v.records > 0 && v.keyed == 0 && !options.allow_unkeyed_history) {
    return fail(refuse("none of its " + std::to_string(v.records) +
                       " records carries a MAC, although this log has been MACed since its key "
                       "was first used: it was rewritten without MACs (the records cannot be "
                       "trusted; keep the file as evidence)"));
  }
  // The database always records a MACed record's MAC with its head: a head recorded without one
  // for a record that carries one was stripped (a downgrade attempt).
  if (options.recorded && options.recorded->seq > 0 && options.recorded->mac.empty() &&
      v.remembered.seq == options.recorded->seq && !v.remembered.mac.empty()) {
    return fail(refuse("the state database records the head " +
                       DescribeAuditHead(*options.recorded) +
                       " without its MAC, although that record carries one: the database was "
                       "edited"));
  }
  if (!options.recorded) {
    if (v.keyed > 0) {
      return fail(refuse("its " + std::to_string(v.records) +
                         " records carry MACs, but the state database records no audit head: "
                         "the database was replaced or reset, so truncation cannot be ruled out"));
    }
    record_now = v.records > 0;
  } else {
    AuditHeadComparison c = CompareAuditHead(v, *options.recorded);
    switch (c.match) {
      case AuditHeadMatch::kSame:
        break;
      case AuditHeadMatch::kAheadByOne:
        repaired = "the last record (" + DescribeAuditHead(v.head) +
                   ") was written but not yet in the state database (a crash between the two "
                   "steps of an append); recorded it now";
        record_now = true;
        break;
      case AuditHeadMatch::kAhead:
        return fail(refuse(c.explanation +
                           " in the state database: the database was restored from an older "
                           "copy or rolled back (check what else it lost: revocations, tokens, "
                           "jobs)"));
      case AuditHeadMatch::kTruncated:
      case AuditHeadMatch::kDiverged:
        return fail(refuse(c.explanation + "; restore the file from a backup if you have one"));
    }
  }
  const AuditHead head = v.head;
  std::unique_ptr<AuditLog> log(new AuditLog(fd, std::move(options), std::move(v)));
  log->repaired_ = repaired;
  if (!repaired.empty()) FLEET_LOG(Warn) << "audit log " << path << ": " << repaired;
  if (record_now && log->options_.record_head) {
    RETURN_IF_ERROR(log->options_.record_head(head));
  }
  if (log->opened_.records > 0 && log->opened_.keyed == 0) {
    // Records from before the log had a key: the first MACed record pins them.
    RETURN_IF_ERROR(log->Append(kKeyedEvent, "coordinator",
                                {{"unkeyed_records", head.seq}, {"unkeyed_head", head.hash}}));
    FLEET_LOG(Info) << "audit log " << path << ": its " << head.seq
                    << " records predate the MAC key; the chain continues from their head "
                    << Short(head.hash) << "... with MACed records";
  }
  return log;
}

AuditLog::AuditLog(int fd, AuditLogOptions options, AuditVerification opened)
    : fd_(fd),
      options_(std::move(options)),
      opened_(std::move(opened)),
      size_(opened_.intact_bytes),
      head_(opened_.head) {}

AuditLog::~AuditLog() { ::close(fd_); }

Status AuditLog::Ready() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failed_;
}

AuditHead AuditLog::head() const {
  std::lock_guard<std::mutex> lock(mu_);
  return head_;
}

Status AuditLog::Append(const std::string& event, const std::string& actor,
                        nlohmann::json fields) {
  std::lock_guard<std::mutex> lock(mu_);
  Status s = AppendLocked(event, actor, std::move(fields));
  if (!s.ok()) FLEET_LOG(Error) << "audit record '" << event << "' not written: " << s.message();
  return s;
}

Status AuditLog::AppendLocked(const std::string& event, const std::string& actor,
                              nlohmann::json fields) {
  if (!failed_.ok()) {
    return Internal("the audit log refuses records since an append failed (" + failed_.message() +
                    "); fix the cause and restart the coordinator");
  }
  if (head_unrecorded_) {
    // Never two records ahead of the database: a crash then would look like a rollback.
    Status r = options_.record_head(head_);
    if (!r.ok()) {
      return Internal("cannot record the audit head in the state database: " + r.message());
    }
    head_unrecorded_ = false;
  }
  nlohmann::json j = fields.is_object() ? std::move(fields) : nlohmann::json::object();
  j.erase("mac");
  j.erase("hash");
  j["seq"] = head_.seq + 1;
  j["time_ms"] = UnixMillis();
  j["event"] = event;
  j["actor"] = actor;
  j["prev"] = head_.hash;
  AuditHead next;
  next.seq = head_.seq + 1;
  next.hash = Hash(head_.hash, Dump(j));
  next.mac = Mac(*options_.key, next.hash);
  j["hash"] = next.hash;
  j["mac"] = next.mac;
  const std::string line = Dump(j) + "\n";

  std::string error;
  if (failpoint::Armed("audit.append_fail." + event, static_cast<uint32_t>(next.seq))) {
    error = "injected write error (failpoint audit.append_fail." + event + ")";
  } else {
    size_t off = 0;
    while (off < line.size() && error.empty()) {
      ssize_t n = ::write(fd_, line.data() + off, line.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        error = std::string("write: ") + (n < 0 ? std::strerror(errno) : "no progress");
      } else {
        off += static_cast<size_t>(n);
      }
    }
    if (error.empty() && ::fdatasync(fd_) != 0) {
      error = std::string("fdatasync: ") + std::strerror(errno);
    }
  }
  if (!error.empty()) {
    // Take back whatever part of the line reached the file; after a failed fdatasync the page
    // cache cannot be trusted either, so the log stops taking records until it is re-verified.
    if (::ftruncate(fd_, static_cast<off_t>(size_)) != 0) {
      error += std::string("; cutting the partial record off failed too: ") + std::strerror(errno);
    }
    failed_ = Internal("cannot append to the audit log " + options_.path + ": " + error);
    return failed_;
  }
  size_ += line.size();
  head_ = next;
  failpoint::Hit("audit.before_head_update", static_cast<uint32_t>(next.seq));
  if (options_.record_head) {
    Status r = options_.record_head(head_);
    if (!r.ok()) {
      head_unrecorded_ = true;
      FLEET_LOG(Error) << "audit record " << head_.seq << " is written but its head could not be "
                       << "recorded in the state database (" << r.message()
                       << "); retried before the next record";
    }
  }
  return OkStatus();
}

}  // namespace fleet
