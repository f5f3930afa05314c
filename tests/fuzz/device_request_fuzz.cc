// Fuzz target: the device request the coordinator parses by hand. FetchTask is a generic
// (ByteBuffer) handler, so the coordinator turns the received slices into a FetchTaskRequest
// itself (common/grpc_util.h ParseByteBuffer) before its checks (protocol version, device id);
// every other request is parsed by gRPC's generated code.
//
// Input: byte 0: how many slices (1-8) gRPC delivered; then for each slice but the last a length
// byte; the rest is the message. Checks beyond "no crash": the result does not depend on how
// the bytes were sliced (it is ParseFromString of their concatenation), and the device id check
// accepts exactly the ids of 1-128 characters of [A-Za-z0-9._-].
#include <string>
#include <vector>

#include "common/config.h"
#include "common/grpc_util.h"
#include "proto/fleet.pb.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fleet;
  fuzz::Input in(data, size);
  const int slices = 1 + in.Byte() % 8;
  std::vector<size_t> lengths;
  for (int i = 0; i + 1 < slices; ++i) lengths.push_back(in.Byte());
  const std::string message(in.Rest());
  std::vector<grpc::Slice> parts;
  size_t at = 0;
  for (size_t len : lengths) {
    len = std::min(len, message.size() - at);
    parts.emplace_back(message.data() + at, len);
    at += len;
  }
  parts.emplace_back(message.data() + at, message.size() - at);
  grpc::ByteBuffer buffer(parts.data(), parts.size());

  v1::FetchTaskRequest req, direct;
  const bool parsed = ParseByteBuffer(buffer, &req);
  const bool direct_ok = direct.ParseFromString(message);
  FUZZ_CHECK(parsed == direct_ok, "slicing changed whether the request parses");
  if (!parsed) return 0;
  FUZZ_CHECK(req.SerializeAsString() == direct.SerializeAsString(),
             "slicing changed what the request says");
  const std::string& id = req.device_id();
  bool valid = !id.empty() && id.size() <= 128;
  for (char c : id) {
    valid = valid && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-');
  }
  FUZZ_CHECK(ValidateDeviceId(id).ok() == valid, "device id check disagrees for '%s'",
             id.substr(0, 64).c_str());
  return 0;
}
