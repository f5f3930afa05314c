#include "client/update_upload.h"

#include <algorithm>

namespace fleet {

grpc::Status PushUpdateChunks(v1::Device::Stub* stub, grpc::ClientContext* ctx,
                              const v1::UpdateHeader& header, const std::string& payload,
                              size_t chunk_bytes) {
  v1::PushUpdateResponse resp;
  std::unique_ptr<grpc::ClientWriter<v1::UpdateChunk>> writer = stub->PushUpdate(ctx, &resp);
  v1::UpdateChunk chunk;
  *chunk.mutable_header() = header;
  chunk.mutable_header()->set_total_bytes(payload.size());
  size_t off = 0;
  bool ok = true;
  do {
    const size_t n = std::min(chunk_bytes, payload.size() - off);
    chunk.set_data(payload.data() + off, n);
    off += n;
    ok = writer->Write(chunk);
    chunk.clear_header();
  } while (ok && off < payload.size());
  writer->WritesDone();
  return writer->Finish();
}

}  // namespace fleet
