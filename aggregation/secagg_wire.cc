#include "aggregation/secagg_wire.h"

#include <initializer_list>

namespace fleet::secagg_wire {
namespace {

void Put(std::string* out, std::string_view field) {
  uint64_t n = field.size();
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(n >> (8 * i)));
  out->append(field.data(), field.size());
}

std::string U32(uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

std::string Encode(std::initializer_list<std::string_view> fields) {
  std::string out;
  for (std::string_view f : fields) Put(&out, f);
  return out;
}

}  // namespace

std::string KeysMessage(const std::string& job, uint32_t round, const std::string& device,
                        const std::string& cipher_pk, const std::string& mask_pk) {
  return Encode({"fleetfl/secagg/v1/keys", job, U32(round), device, cipher_pk, mask_pk});
}

std::string ShareAssociatedData(const std::string& job, uint32_t round, uint32_t from,
                                uint32_t to) {
  return Encode({"fleetfl/secagg/v1/share", job, U32(round), U32(from), U32(to)});
}

std::string SurvivorsMessage(const std::string& job, uint32_t round,
                             const std::vector<uint32_t>& survivors) {
  std::string list;
  for (uint32_t s : survivors) list += U32(s);
  return Encode({"fleetfl/secagg/v1/survivors", job, U32(round), list});
}

std::string ShareKeyContext(const std::string& job, uint32_t round) {
  return Encode({"fleetfl/secagg/v1/share-key", job, U32(round)});
}

std::string MaskSeedContext(const std::string& job, uint32_t round) {
  return Encode({"fleetfl/secagg/v1/mask-seed", job, U32(round)});
}

}  // namespace fleet::secagg_wire
