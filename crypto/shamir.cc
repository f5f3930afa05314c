#include "crypto/shamir.h"

#include <sodium.h>

#include <set>

#include "crypto/prg.h"

namespace fleet::crypto {
namespace internal {
namespace {

__extension__ typedef unsigned __int128 U128;  // GCC/Clang: one 64x64->128 bit multiply

constexpr uint64_t P = kShamirPrime;

// r in [0, 2P) -> r mod P without branching.
uint64_t CondSub(uint64_t r) {
  uint64_t t = r - P;
  uint64_t keep_r = 0 - (t >> 63);  // all ones when r < P (t wrapped)
  return (t & ~keep_r) | (r & keep_r);
}

}  // namespace

uint64_t FieldAdd(uint64_t a, uint64_t b) { return CondSub(a + b); }
uint64_t FieldSub(uint64_t a, uint64_t b) { return CondSub(a + P - b); }

uint64_t FieldMul(uint64_t a, uint64_t b) {
  U128 v = static_cast<U128>(a) * b;  // < 2^122
  uint64_t lo = static_cast<uint64_t>(v) & P;
  uint64_t hi = static_cast<uint64_t>(v >> 61);
  uint64_t r = lo + hi;  // < 2^62
  r = (r & P) + (r >> 61);
  return CondSub(r);
}

// Fermat: a^(P-2). The exponent is public, so branching on its bits leaks nothing.
uint64_t FieldInv(uint64_t a) {
  uint64_t result = 1, base = a;
  for (uint64_t e = P - 2; e != 0; e >>= 1) {
    if (e & 1) result = FieldMul(result, base);
    base = FieldMul(base, base);
  }
  return result;
}

}  // namespace internal

using internal::FieldAdd;
using internal::FieldMul;
using internal::FieldSub;

namespace {

constexpr size_t kChunkBytes[kShamirChunks] = {7, 7, 7, 7, 4};

void SecretToChunks(const Secret32& s, uint64_t* chunks) {
  size_t pos = 0;
  for (size_t c = 0; c < kShamirChunks; ++c) {
    uint64_t v = 0;
    for (size_t i = 0; i < kChunkBytes[c]; ++i) v |= uint64_t{s.data()[pos + i]} << (8 * i);
    chunks[c] = v;
    pos += kChunkBytes[c];
  }
}

class CoefficientSource {
 public:
  explicit CoefficientSource(const Secret32* seed) : seed_(seed) {}
  ~CoefficientSource() { sodium_memzero(buf_, sizeof buf_); }
  // Uniform in [0, P): 61 random bits, redrawn in the (2^-61) case of exactly P.
  uint64_t Next() {
    for (;;) {
      if (used_ == kWords) Refill();
      uint64_t v = buf_[used_++] & P;
      if (v != P) return v;
    }
  }

 private:
  static constexpr size_t kWords = 64;
  static constexpr uint64_t P = kShamirPrime;
  void Refill() {
    if (seed_ != nullptr) {
      Keystream(*seed_, reinterpret_cast<uint8_t*>(buf_), sizeof buf_, block_);
      block_ += sizeof buf_ / 64;
    } else {
      randombytes_buf(buf_, sizeof buf_);
    }
    used_ = 0;
  }
  const Secret32* seed_;
  uint64_t buf_[kWords] = {};
  size_t used_ = kWords;
  uint32_t block_ = 0;
};

}  // namespace

ShamirShare::~ShamirShare() { sodium_memzero(y.data(), sizeof y); }

StatusOr<std::vector<ShamirShare>> ShamirSplit(const Secret32& secret,
                                               const std::vector<uint32_t>& xs, uint32_t threshold,
                                               const Secret32* coefficient_seed) {
  if (threshold < 1 || threshold > xs.size()) {
    return InvalidArgument("Shamir threshold " + std::to_string(threshold) + " must be in [1, " +
                           std::to_string(xs.size()) + "]");
  }
  std::set<uint32_t> seen;
  for (uint32_t x : xs) {
    if (x == 0 || !seen.insert(x).second) {
      return InvalidArgument("Shamir x-coordinates must be distinct and non-zero");
    }
  }
  std::vector<ShamirShare> shares(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) shares[i].x = xs[i];
  uint64_t chunks[kShamirChunks];
  SecretToChunks(secret, chunks);
  CoefficientSource rng(coefficient_seed);
  std::vector<uint64_t> coeff(threshold);
  for (size_t c = 0; c < kShamirChunks; ++c) {
    coeff[0] = chunks[c];
    for (uint32_t j = 1; j < threshold; ++j) coeff[j] = rng.Next();
    for (ShamirShare& s : shares) {  // Horner
      uint64_t acc = 0;
      for (uint32_t j = threshold; j-- > 0;) acc = FieldAdd(FieldMul(acc, s.x), coeff[j]);
      s.y[c] = acc;
    }
  }
  sodium_memzero(chunks, sizeof chunks);
  sodium_memzero(coeff.data(), coeff.size() * sizeof(uint64_t));
  return shares;
}

StatusOr<Secret32> ShamirReconstruct(const std::vector<ShamirShare>& shares, uint32_t threshold) {
  if (threshold < 1 || shares.size() < threshold) {
    return FailedPrecondition("need " + std::to_string(threshold) + " shares, have " +
                              std::to_string(shares.size()));
  }
  std::set<uint32_t> seen;
  for (uint32_t i = 0; i < threshold; ++i) {
    if (shares[i].x == 0 || !seen.insert(shares[i].x).second) {
      return InvalidArgument("Shamir shares have repeated or zero x-coordinates");
    }
  }
  // Lagrange basis at 0 over the first `threshold` shares (public values).
  std::vector<uint64_t> lambda(threshold);
  for (uint32_t i = 0; i < threshold; ++i) {
    uint64_t num = 1, den = 1;
    for (uint32_t j = 0; j < threshold; ++j) {
      if (j == i) continue;
      num = FieldMul(num, shares[j].x);
      den = FieldMul(den, FieldSub(shares[j].x, shares[i].x));
    }
    lambda[i] = FieldMul(num, internal::FieldInv(den));
  }
  Secret32 out;
  uint64_t overflow = 0;
  size_t pos = 0;
  for (size_t c = 0; c < kShamirChunks; ++c) {
    uint64_t v = 0;
    for (uint32_t i = 0; i < threshold; ++i) v = FieldAdd(v, FieldMul(lambda[i], shares[i].y[c]));
    overflow |= v >> (8 * kChunkBytes[c]);
    for (size_t b = 0; b < kChunkBytes[c]; ++b) out.data()[pos + b] = static_cast<uint8_t>(v >> (8 * b));
    pos += kChunkBytes[c];
  }
  if (overflow != 0) {
    return InvalidArgument("Shamir shares are inconsistent (not shares of one secret)");
  }
  return out;
}

std::string EncodeShare(const ShamirShare& share) {
  std::string out(kShamirShareBytes, '\0');
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>(share.x >> (8 * i));
  for (size_t c = 0; c < kShamirChunks; ++c) {
    for (int i = 0; i < 8; ++i) out[4 + 8 * c + i] = static_cast<char>(share.y[c] >> (8 * i));
  }
  return out;
}

StatusOr<ShamirShare> DecodeShare(const std::string& bytes) {
  if (bytes.size() != kShamirShareBytes) {
    return InvalidArgument("Shamir share is " + std::to_string(bytes.size()) + " bytes, expected " +
                           std::to_string(kShamirShareBytes));
  }
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  ShamirShare s;
  for (int i = 0; i < 4; ++i) s.x |= uint32_t{p[i]} << (8 * i);
  for (size_t c = 0; c < kShamirChunks; ++c) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t{p[4 + 8 * c + i]} << (8 * i);
    if (v >= kShamirPrime) return InvalidArgument("Shamir share value outside the field");
    s.y[c] = v;
  }
  if (s.x == 0) return InvalidArgument("Shamir share has x = 0");
  return s;
}

}  // namespace fleet::crypto
