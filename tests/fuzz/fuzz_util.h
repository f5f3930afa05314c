// Shared by the fuzz targets of tests/fuzz: a reader over the fuzzer's bytes and the check that
// turns a broken invariant into a crash the fuzzer (or the ctest replay) reports.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

// Aborts with the condition and location when an invariant a target checks does not hold: the
// fuzzer saves the input as a crash, the replay test fails.
#define FUZZ_CHECK(cond, ...)                                                            \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                                 \
      std::fprintf(stderr, "\n");                                                        \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

namespace fleet::fuzz {

// Takes bytes off the front of the input; past the end, numbers read as 0 and strings as empty.
class Input {
 public:
  Input(const uint8_t* data, size_t size)
      : data_(reinterpret_cast<const char*>(data)), size_(size) {}

  size_t remaining() const { return size_ - pos_; }
  uint8_t Byte() { return pos_ < size_ ? static_cast<uint8_t>(data_[pos_++]) : 0; }
  uint32_t U32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t{Byte()} << (8 * i);
    return v;
  }
  // The next `n` bytes (fewer at the end).
  std::string_view Bytes(size_t n) {
    n = n < remaining() ? n : remaining();
    std::string_view out(data_ + pos_, n);
    pos_ += n;
    return out;
  }
  // A string whose length is the next byte.
  std::string_view ShortString() { return Bytes(Byte()); }
  std::string_view Rest() { return Bytes(remaining()); }

 private:
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace fleet::fuzz
