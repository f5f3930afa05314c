#include "coordinator/task_envelope.h"

#include <google/protobuf/io/coded_stream.h>

#include <string_view>

#include "crypto/model_signature.h"

namespace fleet {
namespace {

// The key (field number, wire type 2 = length-delimited) and length of a bytes field.
void AppendBytesFieldHeader(std::string* out, uint32_t field, size_t length) {
  using google::protobuf::io::CodedOutputStream;
  uint8_t buf[2 * 10];
  uint8_t* p = CodedOutputStream::WriteVarint32ToArray((field << 3) | 2, buf);
  p = CodedOutputStream::WriteVarint64ToArray(length, p);
  out->append(reinterpret_cast<const char*>(buf), static_cast<size_t>(p - buf));
}

}  // namespace

std::string SealTask(const v1::Task& task, const crypto::SigningKey* key) {
  const size_t body_size = task.ByteSizeLong();
  std::string out;
  out.reserve(body_size + 96);
  // proto3 leaves an empty bytes field out: so does the envelope of an all-default task.
  if (body_size > 0) AppendBytesFieldHeader(&out, v1::SignedTask::kTaskFieldNumber, body_size);
  const size_t body_start = out.size();
  task.AppendToString(&out);
  if (key == nullptr) return out;
  const std::string signature =
      crypto::SignTask(*key, std::string_view(out).substr(body_start, body_size));
  AppendBytesFieldHeader(&out, v1::SignedTask::kSignatureFieldNumber, signature.size());
  out.append(signature);
  return out;
}

}  // namespace fleet
