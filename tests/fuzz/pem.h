// PEM armour for the PKI fuzz targets: the fuzzer mutates DER (the structure OpenSSL parses),
// and the targets wrap it the way a device or the coordinator would receive it.
#pragma once

#include <sodium.h>

#include <string>
#include <string_view>

namespace fleet::fuzz {

inline std::string Pem(const std::string& label, std::string_view der) {
  std::string b64(sodium_base64_ENCODED_LEN(der.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(b64.data(), b64.size(), reinterpret_cast<const unsigned char*>(der.data()),
                    der.size(), sodium_base64_VARIANT_ORIGINAL);
  b64.resize(b64.size() - 1);  // the terminating NUL
  std::string out = "-----BEGIN " + label + "-----\n";
  for (size_t i = 0; i < b64.size(); i += 64) out += b64.substr(i, 64) + "\n";
  return out + "-----END " + label + "-----\n";
}

}  // namespace fleet::fuzz
