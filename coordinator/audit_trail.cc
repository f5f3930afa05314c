#include "coordinator/audit_trail.h"

#include <cstdio>

#include "common/clock.h"
#include "common/file_util.h"
#include "common/log.h"
#include "coordinator/authority.h"

namespace fleet {
namespace {

std::string LogPath(const std::string& state_dir) { return state_dir + "/audit.log"; }

std::string ResetHint(const std::string& state_dir) {
  return "the coordinator does not start on such a log: keep the file as evidence, find out "
         "what happened, then run `fleet-coordinator audit-reset --state-dir " +
         state_dir + " --reason TEXT` to start a new chain that records why (see docs/security.md)";
}

}  // namespace

StatusOr<std::unique_ptr<AuditLog>> OpenAuditTrail(const std::string& state_dir, JobStore* store) {
  const std::string log_path = LogPath(state_dir);
  const PkiPaths pki(state_dir);
  ASSIGN_OR_RETURN(std::optional<AuditHead> recorded, store->LoadAuditHead());
  StatusOr<AuditKey> key = LoadAuditKey(pki.audit_key);
  if (key.status().code() == StatusCode::kNotFound) {
    uint64_t keyed = 0;
    if (FileExists(log_path)) {
      ASSIGN_OR_RETURN(AuditVerification v, VerifyAuditLog(log_path));
      keyed = v.keyed;
    }
    if (keyed > 0 || (recorded && !recorded->mac.empty())) {
      return FailedPrecondition(
          "the audit MAC key " + pki.audit_key + " is missing, but " +
          (keyed > 0 ? "the records of " + log_path
                     : std::string("the state database's audit head")) +
          " carry MACs made with it: restore the key from your backup (the log cannot be "
          "verified without it). If it is lost, " +
          ResetHint(state_dir) + " with a new key");
    }
    RETURN_IF_ERROR(MakePrivateDir(pki.dir));
    RETURN_IF_ERROR(CreateAuditKey(pki.audit_key));
    FLEET_LOG(Warn) << "created the audit MAC key " << pki.audit_key
                    << " (this state directory had none): every audit record from now on "
                       "carries a MAC; back the key up apart from the log";
    key = LoadAuditKey(pki.audit_key);
  }
  if (!key.ok()) return key.status();
  AuditLogOptions o;
  o.path = log_path;
  o.key = std::move(key).value();
  o.recorded = recorded;
  o.record_head = [store](const AuditHead& head) { return store->SaveAuditHead(head); };
  o.reset_hint = ResetHint(state_dir);
  // pki/audit-keyed: written once the log was opened with its key. Beside the key (not in the
  // log's directory), so whoever can rewrite the log and the database cannot make a MACed log
  // look like one from before the key.
  const std::string marker = pki.dir + "/audit-keyed";
  o.allow_unkeyed_history = !FileExists(marker);
  ASSIGN_OR_RETURN(std::unique_ptr<AuditLog> log, AuditLog::Open(std::move(o)));
  if (!FileExists(marker)) {
    RETURN_IF_ERROR(WriteFileAtomically(
        marker,
        "the audit log of this state directory carries MACs made with audit.key from here on; "
        "a log without them is refused\n",
        0600));
  }
  const AuditHead head = log->head();
  FLEET_LOG(Info) << "audit log " << log_path << ": " << head.seq << " records, "
                  << log->opened().keyed << " MACed, intact; head seq " << head.seq << " hash "
                  << (head.hash.empty() ? "-" : head.hash);
  return log;
}

StatusOr<std::string> ResetAuditTrail(const std::string& state_dir, JobStore* store,
                                      const std::string& reason, const std::string& actor) {
  if (reason.empty()) return InvalidArgument("audit-reset needs --reason (it goes on record)");
  const std::string log_path = LogPath(state_dir);
  const PkiPaths pki(state_dir);
  ASSIGN_OR_RETURN(std::optional<AuditHead> recorded, store->LoadAuditHead());
  bool new_key = false;
  StatusOr<AuditKey> key = LoadAuditKey(pki.audit_key);
  if (key.status().code() == StatusCode::kNotFound) {
    RETURN_IF_ERROR(MakePrivateDir(pki.dir));
    RETURN_IF_ERROR(CreateAuditKey(pki.audit_key));
    new_key = true;
    key = LoadAuditKey(pki.audit_key);
  }
  if (!key.ok()) return key.status();

  nlohmann::json fields = {{"reason", reason}, {"new_key", new_key}};
  if (recorded) {
    fields["recorded_head_seq"] = recorded->seq;
    fields["recorded_head_hash"] = recorded->hash;
  }
  std::string summary;
  if (FileExists(log_path)) {
    StatusOr<AuditVerification> v =
        VerifyAuditLog(log_path, new_key ? nullptr : &*key, recorded ? recorded->seq : 0);
    std::string state;
    if (!v.ok()) {
      state = v.status().message();
    } else if (!v->ok) {
      state = "broken at line " + std::to_string(v->broken_line) + ": " + v->reason;
    } else if (recorded) {
      state = "intact; " + CompareAuditHead(*v, *recorded).explanation;
    } else {
      state = "intact, " + std::to_string(v->records) + " records";
    }
    if (new_key) state += " (MACs not checked: the old key is missing)";
    const std::string moved = log_path + ".replaced-" + std::to_string(UnixMillis());
    if (std::rename(log_path.c_str(), moved.c_str()) != 0) {
      return Internal("cannot move " + log_path + " aside to " + moved);
    }
    fields["replaced_file"] = moved;
    fields["replaced_state"] = state;
    if (v.ok()) {
      fields["replaced_records"] = v->records;
      fields["replaced_head_hash"] = v->head.hash;
    }
    summary = "moved the old log to " + moved + " (" + state + ")";
  } else {
    summary = "there was no audit log";
  }
  AuditLogOptions o;
  o.path = log_path;
  o.key = std::move(key).value();
  o.record_head = [store](const AuditHead& head) { return store->SaveAuditHead(head); };
  ASSIGN_OR_RETURN(std::unique_ptr<AuditLog> log, AuditLog::Open(std::move(o)));
  RETURN_IF_ERROR(log->Append("audit_reset", actor, std::move(fields)));
  return summary + "; started a new chain at " + log_path + " whose first record says why" +
         (new_key ? "; made a new MAC key " + pki.audit_key : "");
}

}  // namespace fleet
