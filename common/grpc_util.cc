#include "common/grpc_util.h"

#include "common/file_util.h"
#include "common/log.h"

namespace fleet {

StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsOptions& opts) {
  if (opts.insecure) {
    FLEET_LOG(Warn) << "--insecure: serving PLAINTEXT gRPC; traffic is neither encrypted nor "
                       "authenticated. Use only on a trusted loopback for development.";
    return grpc::InsecureServerCredentials();
  }
  if (opts.cert_file.empty() || opts.key_file.empty()) {
    return InvalidArgument(
        "TLS needs a server certificate and key (--tls-cert, --tls-key or tls: in the config); "
        "pass --insecure to serve plaintext for development");
  }
  ASSIGN_OR_RETURN(std::string cert, ReadFile(opts.cert_file));
  ASSIGN_OR_RETURN(std::string key, ReadFile(opts.key_file));
  if (cert.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    return InvalidArgument(opts.cert_file + ": not a PEM certificate");
  }
  if (key.find("PRIVATE KEY-----") == std::string::npos) {
    return InvalidArgument(opts.key_file + ": not a PEM private key");
  }
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({key, cert});
  return grpc::SslServerCredentials(ssl);
}

StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& address,
                                                     const ClientTlsOptions& opts,
                                                     int max_message_bytes) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(max_message_bytes);
  args.SetMaxSendMessageSize(max_message_bytes);
  // Reconnect quickly after a coordinator restart; our own Backoff paces the RPC retries.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (opts.insecure) {
    FLEET_LOG(Warn) << "--insecure: connecting to " << address
                    << " over PLAINTEXT; the coordinator is not authenticated.";
    creds = grpc::InsecureChannelCredentials();
  } else {
    if (opts.ca_file.empty()) {
      return InvalidArgument(
          "TLS needs the CA certificate to pin (--ca-cert or tls.ca_cert); pass --insecure to "
          "connect in plaintext for development");
    }
    ASSIGN_OR_RETURN(std::string ca, ReadFile(opts.ca_file));
    if (ca.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
      return InvalidArgument(opts.ca_file + ": not a PEM certificate");
    }
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ca;
    creds = grpc::SslCredentials(ssl);
    if (!opts.server_name.empty()) {
      args.SetSslTargetNameOverride(opts.server_name);
    }
  }
  return grpc::CreateCustomChannel(address, creds, args);
}

grpc::Status ToGrpcStatus(const Status& status) {
  grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
  switch (status.code()) {
    case StatusCode::kOk: return grpc::Status::OK;
    case StatusCode::kInvalidArgument: code = grpc::StatusCode::INVALID_ARGUMENT; break;
    case StatusCode::kNotFound: code = grpc::StatusCode::NOT_FOUND; break;
    case StatusCode::kAlreadyExists: code = grpc::StatusCode::ALREADY_EXISTS; break;
    case StatusCode::kFailedPrecondition: code = grpc::StatusCode::FAILED_PRECONDITION; break;
    case StatusCode::kUnavailable: code = grpc::StatusCode::UNAVAILABLE; break;
    case StatusCode::kDeadlineExceeded: code = grpc::StatusCode::DEADLINE_EXCEEDED; break;
    case StatusCode::kResourceExhausted: code = grpc::StatusCode::RESOURCE_EXHAUSTED; break;
    case StatusCode::kInternal: code = grpc::StatusCode::INTERNAL; break;
    case StatusCode::kCancelled: code = grpc::StatusCode::CANCELLED; break;
  }
  return grpc::Status(code, status.message());
}

Status FromGrpcStatus(const grpc::Status& status) {
  StatusCode code = StatusCode::kInternal;
  switch (status.error_code()) {
    case grpc::StatusCode::OK: return OkStatus();
    case grpc::StatusCode::INVALID_ARGUMENT: code = StatusCode::kInvalidArgument; break;
    case grpc::StatusCode::NOT_FOUND: code = StatusCode::kNotFound; break;
    case grpc::StatusCode::ALREADY_EXISTS: code = StatusCode::kAlreadyExists; break;
    case grpc::StatusCode::FAILED_PRECONDITION: code = StatusCode::kFailedPrecondition; break;
    case grpc::StatusCode::UNAVAILABLE: code = StatusCode::kUnavailable; break;
    case grpc::StatusCode::DEADLINE_EXCEEDED: code = StatusCode::kDeadlineExceeded; break;
    case grpc::StatusCode::RESOURCE_EXHAUSTED: code = StatusCode::kResourceExhausted; break;
    case grpc::StatusCode::CANCELLED: code = StatusCode::kCancelled; break;
    default: break;
  }
  return Status(code, status.error_message());
}

}  // namespace fleet
