// The coordinator's audit trail: STATE_DIR/audit.log (common/audit_log.h), MACed with the key
// STATE_DIR/pki/audit.key, its head mirrored in the state database after every append so that
// truncation, rewriting and rollback of the file are found at the next start.
#pragma once

#include <memory>
#include <string>

#include "common/audit_log.h"
#include "coordinator/store.h"

namespace fleet {

// Opens the trail for serving. The key is created (logged) for a state directory that has none
// yet while nothing MACed exists; missing while the log or the database holds MACs, it is a
// FailedPrecondition saying to restore it. Then AuditLog::Open checks the log against the
// database's head (refusing a broken, truncated, rewritten or rolled-back log with what the
// operator can do) and keeps that head current through `store`, which must outlive the log.
StatusOr<std::unique_ptr<AuditLog>> OpenAuditTrail(const std::string& state_dir, JobStore* store);

// `fleet-coordinator audit-reset`: for an operator who has read why the coordinator refused
// its audit log. Moves audit.log aside (kept as evidence, as audit.log.replaced-UNIXMS), makes a
// new key if the old one is missing, and starts a new chain whose first record ("audit_reset")
// says why (`reason`), who (`actor`), what the old file held and what the database had
// recorded. Run it with the coordinator stopped. Returns a summary for the operator.
StatusOr<std::string> ResetAuditTrail(const std::string& state_dir, JobStore* store,
                                      const std::string& reason, const std::string& actor);

}  // namespace fleet
