#include "crypto/model_signature.h"

#include <sodium.h>

namespace fleet::crypto {

std::string ModelSignatureMessage(std::string_view job_id, uint32_t round,
                                  std::string_view parameters) {
  unsigned char digest[32];
  crypto_generichash(digest, sizeof digest, reinterpret_cast<const unsigned char*>(parameters.data()),
                     parameters.size(), nullptr, 0);
  std::string m = "fleetfl model v1";
  m.push_back('\0');
  uint32_t len = static_cast<uint32_t>(job_id.size());
  for (int i = 0; i < 4; ++i) m.push_back(static_cast<char>(len >> (8 * i)));
  m.append(job_id);
  for (int i = 0; i < 4; ++i) m.push_back(static_cast<char>(round >> (8 * i)));
  m.append(reinterpret_cast<const char*>(digest), sizeof digest);
  return m;
}

std::string SignModel(const SigningKey& key, std::string_view job_id, uint32_t round,
                      std::string_view parameters) {
  return key.Sign(ModelSignatureMessage(job_id, round, parameters));
}

bool VerifyModel(const Bytes32& public_key, std::string_view job_id, uint32_t round,
                 std::string_view parameters, std::string_view signature) {
  return VerifySignature(public_key, ModelSignatureMessage(job_id, round, parameters), signature);
}

}  // namespace fleet::crypto
