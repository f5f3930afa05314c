// Which global models a device accepts: signed by the coordinator's model-signing key for this
// job and round (Ed25519 over job id, round and the parameters' hash), and never older than a
// model already accepted for the job (no rollback). A refused model changes nothing: the
// previous good one stays in use. Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "common/status.h"
#include "crypto/keys.h"
#include "proto/fleet.pb.h"

namespace fleet {

class ModelGuard {
 public:
  explicit ModelGuard(const crypto::Bytes32& model_key) : key_(model_key) {}
  // PermissionDenied naming why (unsigned, bad signature, rollback); OK records the round.
  Status Accept(const v1::Task& task);
  const crypto::Bytes32& key() const { return key_; }

 private:
  crypto::Bytes32 key_;
  std::map<std::string, uint32_t> newest_round_;  // job -> newest round accepted
};

}  // namespace fleet
