#include "aggregation/secagg_wire.h"

#include <initializer_list>
#include <string_view>

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

// label, job, round, nonce, then `fields`.
std::string Encode(std::string_view label, const Attempt& a,
                   std::initializer_list<std::string_view> fields) {
  std::string out;
  Put(&out, label);
  Put(&out, a.job);
  Put(&out, U32(a.round));
  Put(&out, a.nonce);
  for (std::string_view f : fields) Put(&out, f);
  return out;
}

std::string Pair(std::string_view label, const Attempt& attempt, Party a, Party b) {
  const Party& lo = a.index <= b.index ? a : b;
  const Party& hi = a.index <= b.index ? b : a;
  return Encode(label, attempt, {U32(lo.index), lo.id, U32(hi.index), hi.id});
}

}  // namespace

std::string KeysMessage(const Attempt& attempt, const std::string& device,
                        const std::string& cipher_pk, const std::string& mask_pk) {
  return Encode("fleetfl/secagg/v2/keys", attempt, {device, cipher_pk, mask_pk});
}

std::string ShareAssociatedData(const Attempt& attempt, Party from, Party to) {
  return Encode("fleetfl/secagg/v2/share", attempt,
                {U32(from.index), from.id, U32(to.index), to.id});
}

std::string SurvivorsMessage(const Attempt& attempt, const std::vector<uint32_t>& survivors) {
  std::string list;
  for (uint32_t s : survivors) list += U32(s);
  return Encode("fleetfl/secagg/v2/survivors", attempt, {list});
}

std::string ShareKeyContext(const Attempt& attempt, Party a, Party b) {
  return Pair("fleetfl/secagg/v2/share-key", attempt, a, b);
}

std::string MaskSeedContext(const Attempt& attempt, Party a, Party b) {
  return Pair("fleetfl/secagg/v2/mask-seed", attempt, a, b);
}

}  // namespace fleet::secagg_wire
