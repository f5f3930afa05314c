#include "crypto/prg.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

namespace fleet::crypto {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "keystream words are read little-endian");

constexpr size_t kBlock = 64;                    // ChaCha20 block
constexpr size_t kChunkBytes = 64 * kBlock;      // 4 KiB per libsodium call: stays in L1
const uint8_t kZeroNonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {};
const uint8_t kZeros[kChunkBytes] = {};

// Calls fn(words, offset, count) for consecutive chunks of the keystream of `seed` read as
// little-endian Words, covering words [0, n); the chunk buffer is wiped afterwards.
template <typename Word, typename Fn>
void ForEachKeystreamChunk(const Secret32& seed, size_t n, Fn&& fn, uint32_t block = 0) {
  constexpr size_t kWords = kChunkBytes / sizeof(Word);
  alignas(64) Word buf[kWords];
  for (size_t i = 0; i < n; i += kWords) {
    size_t m = std::min(kWords, n - i);
    crypto_stream_chacha20_ietf_xor_ic(reinterpret_cast<uint8_t*>(buf), kZeros, m * sizeof(Word),
                                       kZeroNonce, block, seed.data());
    block += static_cast<uint32_t>(kChunkBytes / kBlock);
    fn(static_cast<const Word*>(buf), i, m);
  }
  sodium_memzero(buf, sizeof buf);
}

}  // namespace

template <typename Word>
void ApplyMask(const Secret32& seed, MaskSign sign, Word* out, size_t n) {
  static_assert(std::is_same_v<Word, uint32_t> || std::is_same_v<Word, uint64_t>);
  ForEachKeystreamChunk<Word>(seed, n, [&](const Word* ks, size_t i, size_t m) {
    Word* o = out + i;
    if (sign == MaskSign::kAdd) {
      for (size_t j = 0; j < m; ++j) o[j] += ks[j];
    } else {
      for (size_t j = 0; j < m; ++j) o[j] -= ks[j];
    }
  });
}

template void ApplyMask<uint32_t>(const Secret32&, MaskSign, uint32_t*, size_t);
template void ApplyMask<uint64_t>(const Secret32&, MaskSign, uint64_t*, size_t);

void Keystream(const Secret32& seed, uint8_t* out, size_t bytes, uint32_t first_block) {
  for (size_t i = 0; i < bytes; i += kChunkBytes) {
    crypto_stream_chacha20_ietf_xor_ic(out + i, kZeros, std::min(kChunkBytes, bytes - i),
                                       kZeroNonce, first_block, seed.data());
    first_block += static_cast<uint32_t>(kChunkBytes / kBlock);
  }
}

void UniformDoubles(const Secret32& seed, double* out, size_t n, uint32_t first_block) {
  ForEachKeystreamChunk<uint64_t>(
      seed, n,
      [&](const uint64_t* ks, size_t i, size_t m) {
        for (size_t j = 0; j < m; ++j) out[i + j] = static_cast<double>(ks[j] >> 11) * 0x1.0p-53;
      },
      first_block);
}

}  // namespace fleet::crypto
