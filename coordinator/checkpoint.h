// Model checkpoints of one job, as files in its own directory: round-N.tensors (the global model,
// a FlatBuffers TensorList) and, for stateful server optimizers, round-N.optimizer. Each file is
// written to a temporary name, fsynced and renamed, so a crash leaves either the old file or the
// new one, never half of one. The caller records the returned CheckpointRecord (with BLAKE2b-256
// checksums) in the same store transaction as the round, and Read() verifies them, so a file that
// was truncated or damaged later is detected instead of trained on.
//
// Thread-compatible: one job runner owns its directory.
#pragma once

#include <string>

#include "coordinator/store.h"

namespace fleet {

class CheckpointDir {
 public:
  explicit CheckpointDir(std::string dir) : dir_(std::move(dir)) {}

  // Writes round `round`'s model and (when non-empty) optimizer state.
  StatusOr<CheckpointRecord> Write(uint32_t round, const std::string& model,
                                   const std::string& optimizer) const;
  // Reads a recorded checkpoint and checks sizes and checksums; an error names the file and
  // what is wrong with it.
  Status Read(const CheckpointRecord& record, std::string* model, std::string* optimizer) const;
  // Deletes checkpoint files of rounds before `round` and temporary files left by a crash.
  void RemoveBefore(uint32_t round) const;

 private:
  std::string dir_;
};

// Hex BLAKE2b-256 of `data`.
std::string Blake2bHex(const std::string& data);

}  // namespace fleet
