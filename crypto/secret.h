// Fixed-size secret byte strings that wipe themselves (sodium_memzero) when destroyed or
// overwritten. Used for every private key, seed and derived key in the project.
#pragma once

#include <sodium.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <string>

namespace fleet::crypto {

template <size_t N>
class Secret {
 public:
  Secret() { bytes_.fill(0); }
  Secret(const Secret& other) : bytes_(other.bytes_) {}
  Secret& operator=(const Secret& other) {
    if (this != &other) bytes_ = other.bytes_;
    return *this;
  }
  ~Secret() { sodium_memzero(bytes_.data(), N); }

  uint8_t* data() { return bytes_.data(); }
  const uint8_t* data() const { return bytes_.data(); }
  static constexpr size_t size() { return N; }

 private:
  std::array<uint8_t, N> bytes_;
};

using Secret32 = Secret<32>;
using Bytes32 = std::array<uint8_t, 32>;

// Conversions for protobuf `bytes` fields (std::string). FromString fails on a wrong length.
inline std::string ToString(const Bytes32& b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}
inline bool FromString(const std::string& s, Bytes32* out) {
  if (s.size() != out->size()) return false;
  std::memcpy(out->data(), s.data(), s.size());
  return true;
}

// Key files hold 2·n lowercase hex digits and a newline. FromHex ignores a trailing "\n" or
// "\r\n" and fails unless exactly n bytes are encoded; it wipes its working copy.
inline std::string ToHex(const uint8_t* bytes, size_t n) {
  std::string hex(2 * n + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), bytes, n);
  hex.pop_back();
  return hex;
}
inline bool FromHex(std::string text, uint8_t* out, size_t n) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  size_t len = 0;
  bool ok = text.size() == 2 * n &&
            sodium_hex2bin(out, n, text.data(), text.size(), nullptr, &len, nullptr) == 0 &&
            len == n;
  sodium_memzero(text.data(), text.size());
  return ok;
}

}  // namespace fleet::crypto
