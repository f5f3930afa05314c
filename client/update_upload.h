// The one PushUpdate writer: the header in the first chunk, the payload in `chunk_bytes` slices.
// Used by fleet-client and by fleet-sim's virtual devices. Thread-compatible.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "proto/fleet.grpc.pb.h"

namespace fleet {

// Streams `payload` (header.total_bytes is set to its size) over a started `ctx`.
grpc::Status PushUpdateChunks(v1::Device::Stub* stub, grpc::ClientContext* ctx,
                              const v1::UpdateHeader& header, const std::string& payload,
                              size_t chunk_bytes);

}  // namespace fleet
