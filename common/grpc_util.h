// gRPC plumbing shared by the three binaries: TLS credentials, channels, Status conversion.
// TLS is the default; plaintext requires an explicit insecure flag and logs a warning.
#pragma once

#include <google/protobuf/message.h>
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "common/status.h"

namespace fleet {

// v2: FetchTask answers with a SignedTask (the whole task signed over its exact bytes).
// v3: enrollment sends a token proof instead of the token; renewal proves possession of the
// current key (crypto/enroll_token.h).
constexpr uint32_t kProtocolVersion = 3;

// In the ALREADY_EXISTS refusal of a PushUpdate while the same device's previous stream is still
// open. Unlike the other ALREADY_EXISTS (the round already has this device's answer) it does not
// mean an earlier try arrived, so clients retry it.
constexpr char kUploadOpenReason[] = "already has an upload open";

struct ServerTlsOptions {
  bool insecure = false;
  std::string cert_file;       // PEM chain
  std::string key_file;        // PEM private key
  std::string client_ca_file;  // set: verify client certificates against this CA (mTLS)
  // With client_ca_file: refuse handshakes without a client certificate (else they pass and
  // each call decides).
  bool require_client_certificate = false;
};

struct ClientTlsOptions {
  bool insecure = false;
  std::string ca_file;      // PEM roots to pin
  std::string server_name;  // override for the certificate name check (optional)
  std::string cert_file;    // client certificate for mTLS (optional)
  std::string key_file;
  // In-memory alternatives (take precedence over the files).
  std::string ca_pem, cert_pem, key_pem;
};

// Restricts every TLS context of this process to TLS 1.3 (OpenSSL process-wide policy). Call
// first thing in main(), before any gRPC credentials exist.
Status RequireTls13();

StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsOptions& opts);

// max_message_bytes bounds both directions.
StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& address,
                                                     const ClientTlsOptions& opts,
                                                     int max_message_bytes);

grpc::Status ToGrpcStatus(const Status& status);
Status FromGrpcStatus(const grpc::Status& status);

// Parses a request a generic (ByteBuffer) handler received, slice by slice as gRPC delivered it:
// false for bytes that are not a `out` message. The one place such requests are parsed by hand.
bool ParseByteBuffer(const grpc::ByteBuffer& buffer, google::protobuf::Message* out);

}  // namespace fleet
