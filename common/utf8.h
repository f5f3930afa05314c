// UTF-8 helpers for text another party sent (configs, device reports, log messages). In
// fleet_base (no dependencies) so that logging can use them. Thread-safe (pure functions).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace fleet {

// The length of the well-formed UTF-8 sequence of 2 to 4 bytes starting at s[i], with its code
// point in *cp; 0 when none starts there (an ASCII byte, a stray continuation byte, a truncated,
// overlong or surrogate sequence, or a code point past U+10FFFF).
size_t Utf8SequenceAt(std::string_view s, size_t i, uint32_t* cp);

// Well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF). Config strings
// end up in protobuf `string` fields and JSON, which take nothing else.
bool IsValidUtf8(std::string_view s);

// The longest prefix of `s` of at most `max_bytes` that does not end inside a UTF-8 sequence:
// for cutting another party's text before it is logged or audited (a byte cut can leave an
// invalid sequence, which JSON encoders refuse).
std::string Utf8Prefix(std::string_view s, size_t max_bytes);

}  // namespace fleet
