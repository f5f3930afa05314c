#include "crypto/prg.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

namespace fleet::crypto {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "keystream words are read little-endian");

constexpr size_t kBlock = 64;                    // ChaCha20 block
constexpr size_t kChunkBytes = 256 * kBlock;     // 16 KiB per libsodium call
const uint8_t kZeroNonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {};
const uint8_t kZeros[kChunkBytes] = {};

// Keystream bytes [block*64, block*64 + bytes) into out.
void Chunk(const Secret32& seed, uint32_t block, uint8_t* out, size_t bytes) {
  crypto_stream_chacha20_ietf_xor_ic(out, kZeros, bytes, kZeroNonce, block, seed.data());
}

}  // namespace

template <typename Word>
void ApplyMask(const Secret32& seed, MaskSign sign, Word* out, size_t n) {
  static_assert(std::is_same_v<Word, uint32_t> || std::is_same_v<Word, uint64_t>);
  constexpr size_t kWords = kChunkBytes / sizeof(Word);
  alignas(64) Word buf[kWords];
  uint32_t block = 0;
  for (size_t i = 0; i < n; i += kWords) {
    size_t m = std::min(kWords, n - i);
    Chunk(seed, block, reinterpret_cast<uint8_t*>(buf), m * sizeof(Word));
    block += static_cast<uint32_t>(kChunkBytes / kBlock);
    Word* o = out + i;
    if (sign == MaskSign::kAdd) {
      for (size_t j = 0; j < m; ++j) o[j] += buf[j];
    } else {
      for (size_t j = 0; j < m; ++j) o[j] -= buf[j];
    }
  }
  sodium_memzero(buf, sizeof buf);
}

template void ApplyMask<uint32_t>(const Secret32&, MaskSign, uint32_t*, size_t);
template void ApplyMask<uint64_t>(const Secret32&, MaskSign, uint64_t*, size_t);

void Keystream(const Secret32& seed, uint8_t* out, size_t bytes) {
  uint32_t block = 0;
  for (size_t i = 0; i < bytes; i += kChunkBytes) {
    Chunk(seed, block, out + i, std::min(kChunkBytes, bytes - i));
    block += static_cast<uint32_t>(kChunkBytes / kBlock);
  }
}

void UniformDoubles(const Secret32& seed, double* out, size_t n) {
  constexpr size_t kWords = kChunkBytes / sizeof(uint64_t);
  alignas(64) uint64_t buf[kWords];
  uint32_t block = 0;
  for (size_t i = 0; i < n; i += kWords) {
    size_t m = std::min(kWords, n - i);
    Chunk(seed, block, reinterpret_cast<uint8_t*>(buf), m * sizeof(uint64_t));
    block += static_cast<uint32_t>(kChunkBytes / kBlock);
    for (size_t j = 0; j < m; ++j) out[i + j] = static_cast<double>(buf[j] >> 11) * 0x1.0p-53;
  }
  sodium_memzero(buf, sizeof buf);
}

}  // namespace fleet::crypto
