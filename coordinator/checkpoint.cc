#include "coordinator/checkpoint.h"

#include <dirent.h>
#include <sodium.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "common/failpoint.h"
#include "common/file_util.h"
#include "common/log.h"
#include "crypto/secret.h"

namespace fleet {

std::string Blake2bHex(const std::string& data) {
  uint8_t out[32];
  crypto_generichash(out, sizeof(out), reinterpret_cast<const uint8_t*>(data.data()), data.size(),
                     nullptr, 0);
  return crypto::ToHex(out, sizeof(out));
}

namespace {

std::string FileName(uint32_t round, const char* kind) {
  return "round-" + std::to_string(round) + "." + kind;
}

// What a crash in the middle of writing leaves behind: the first half of the bytes in the
// temporary file that WriteFileAtomically would have renamed.
void CrashMidWrite(const std::string& path, const std::string& data, uint32_t round) {
  if (!failpoint::Armed("checkpoint.mid_write", round)) return;
  StatusOr<int> fd = internal::CreateTempFile(internal::TempNameFor(path));
  if (fd.ok()) {
    (void)!::write(*fd, data.data(), data.size() / 2);
    ::close(*fd);
  }
  failpoint::Hit("checkpoint.mid_write", round);
}

}  // namespace

StatusOr<CheckpointRecord> CheckpointDir::Write(uint32_t round, const std::string& model,
                                                const std::string& optimizer) const {
  CheckpointRecord r;
  r.round = round;
  r.file = FileName(round, "tensors");
  r.bytes = model.size();
  r.blake2b = Blake2bHex(model);
  CrashMidWrite(dir_ + "/" + r.file, model, round);
  RETURN_IF_ERROR(WriteFileAtomically(dir_ + "/" + r.file, model, 0600));
  if (!optimizer.empty()) {
    r.optimizer_file = FileName(round, "optimizer");
    r.optimizer_blake2b = Blake2bHex(optimizer);
    RETURN_IF_ERROR(WriteFileAtomically(dir_ + "/" + r.optimizer_file, optimizer, 0600));
  }
  return r;
}

Status CheckpointDir::Read(const CheckpointRecord& r, std::string* model,
                           std::string* optimizer) const {
  auto load = [&](const std::string& name, const std::string& sum, uint64_t bytes,
                  std::string* out) -> Status {
    const std::string path = dir_ + "/" + name;
    StatusOr<std::string> data = ReadFile(path);
    if (!data.ok()) return DataLoss("checkpoint " + path + ": " + data.status().message());
    if (bytes != 0 && data->size() != bytes) {
      return DataLoss("checkpoint " + path + " is " + std::to_string(data->size()) +
                      " bytes, the round recorded " + std::to_string(bytes) + " (truncated?)");
    }
    if (sum.size() != 64 || sodium_memcmp(Blake2bHex(*data).data(), sum.data(), 64) != 0) {
      return DataLoss("checkpoint " + path + " does not match its recorded BLAKE2b checksum");
    }
    *out = std::move(data).value();
    return OkStatus();
  };
  RETURN_IF_ERROR(load(r.file, r.blake2b, r.bytes, model));
  optimizer->clear();
  if (!r.optimizer_file.empty()) {
    RETURN_IF_ERROR(load(r.optimizer_file, r.optimizer_blake2b, 0, optimizer));
  }
  return OkStatus();
}

void CheckpointDir::RemoveBefore(uint32_t round) const {
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.rfind("round-", 0) != 0) continue;
    const bool temporary = name.find(".tmp.") != std::string::npos;
    const unsigned long n = std::strtoul(name.c_str() + 6, nullptr, 10);
    if (temporary || n < round) ::unlink((dir_ + "/" + name).c_str());
  }
  ::closedir(d);
}

}  // namespace fleet
