// The coordinator's side of signed tasks (proto/fleet.proto SignedTask, crypto/model_signature.h):
// a task is serialized once, signed over exactly those bytes, and wrapped, in one buffer.
#pragma once

#include <string>

#include "crypto/keys.h"
#include "proto/fleet.pb.h"

namespace fleet {

// The serialized SignedTask for `task`: field 1 the Task's bytes, field 2 the signature over
// them (omitted without a key: --insecure without a PKI). Byte for byte what
// SignedTask::SerializeAsString() gives for the same fields, but the task is serialized straight
// into the final buffer, so a model-sized task is copied once here, not once per nesting level.
std::string SealTask(const v1::Task& task, const crypto::SigningKey* key);

}  // namespace fleet
