#include "crypto/model_signature.h"

#include <sodium.h>

namespace fleet::crypto {
namespace {
// Domain separation: these signatures can never be confused with any other use of the key.
constexpr std::string_view kTaskDomain{"fleetfl signed task v1\0", 23};
}  // namespace

std::string TaskSignatureMessage(std::string_view task_bytes) {
  unsigned char digest[32];
  crypto_generichash(digest, sizeof digest,
                     reinterpret_cast<const unsigned char*>(task_bytes.data()), task_bytes.size(),
                     nullptr, 0);
  std::string m(kTaskDomain);
  m.append(reinterpret_cast<const char*>(digest), sizeof digest);
  return m;
}

std::string SignTask(const SigningKey& key, std::string_view task_bytes) {
  return key.Sign(TaskSignatureMessage(task_bytes));
}

bool VerifyTask(const Bytes32& public_key, std::string_view task_bytes,
                std::string_view signature) {
  return VerifySignature(public_key, TaskSignatureMessage(task_bytes), signature);
}

}  // namespace fleet::crypto
