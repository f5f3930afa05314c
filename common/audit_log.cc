#include "common/audit_log.h"

#include <fcntl.h>
#include <sodium.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "common/clock.h"

namespace fleet {
namespace {

std::string Hash(const std::string& prev, const std::string& canonical) {
  std::string input = prev + "\n" + canonical;
  unsigned char h[32];
  crypto_generichash(h, sizeof h, reinterpret_cast<const unsigned char*>(input.data()),
                     input.size(), nullptr, 0);
  char hex[65];
  sodium_bin2hex(hex, sizeof hex, h, sizeof h);
  return hex;
}

// Checks one line against the chain so far; returns the reason it breaks it, or "".
std::string CheckRecord(const std::string& line, uint64_t expected_seq, const std::string& prev,
                        std::string* hash) {
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return "not a JSON object";
  if (!j.contains("hash") || !j["hash"].is_string()) return "no hash";
  if (!j.contains("prev") || !j["prev"].is_string()) return "no prev";
  if (!j.contains("seq") || !j["seq"].is_number_unsigned()) return "no seq";
  if (j["seq"].get<uint64_t>() != expected_seq) {
    return "seq " + std::to_string(j["seq"].get<uint64_t>()) + " where " +
           std::to_string(expected_seq) + " was expected (a record was removed or reordered)";
  }
  if (j["prev"].get<std::string>() != prev) {
    return "prev does not match the previous record's hash (a record was removed or reordered)";
  }
  *hash = j["hash"].get<std::string>();
  j.erase("hash");
  if (Hash(prev, j.dump()) != *hash) return "hash does not match the record (it was edited)";
  return "";
}

}  // namespace

StatusOr<AuditVerification> VerifyAuditLog(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot open audit log " + path + ": " + std::strerror(errno));
  AuditVerification v;
  std::string line, prev, hash;
  uint64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    std::string why = CheckRecord(line, v.records + 1, prev, &hash);
    if (!why.empty()) {
      v.ok = false;
      v.broken_line = n;
      v.reason = why;
      break;
    }
    prev = hash;
    ++v.records;
  }
  v.last_hash = prev;
  return v;
}

StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Unavailable("cannot open audit log " + path + ": " + std::strerror(errno));
  StatusOr<AuditVerification> v = VerifyAuditLog(path);
  if (!v.ok()) {
    ::close(fd);
    return v.status();
  }
  if (!v->ok) {
    ::close(fd);
    return FailedPrecondition("audit log " + path + " is broken at line " +
                              std::to_string(v->broken_line) + ": " + v->reason +
                              "; move it aside (keep it as evidence) to start a new chain");
  }
  return std::unique_ptr<AuditLog>(new AuditLog(fd, v->records, v->last_hash));
}

AuditLog::~AuditLog() { ::close(fd_); }

Status AuditLog::Append(const std::string& event, const std::string& actor,
                        nlohmann::json fields) {
  std::lock_guard<std::mutex> lock(mu_);
  nlohmann::json j = fields.is_object() ? std::move(fields) : nlohmann::json::object();
  j["seq"] = seq_ + 1;
  j["time_ms"] = UnixMillis();
  j["event"] = event;
  j["actor"] = actor;
  j["prev"] = last_hash_;
  std::string hash = Hash(last_hash_, j.dump());
  j["hash"] = hash;
  std::string line = j.dump() + "\n";
  if (::write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size()) ||
      ::fdatasync(fd_) != 0) {
    return Unavailable(std::string("cannot append to the audit log: ") + std::strerror(errno));
  }
  ++seq_;
  last_hash_ = hash;
  return OkStatus();
}

}  // namespace fleet
