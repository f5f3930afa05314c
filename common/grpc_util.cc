#include "common/grpc_util.h"

#include <openssl/conf.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <vector>

#include "common/file_util.h"
#include "common/log.h"

namespace fleet {

Status RequireTls13() {
  // gRPC 1.51's C++ credentials cannot set a minimum TLS version, and its handshaker factory
  // sets min 1.2 on every SSL_CTX it makes. Protocol options (SSL_OP_NO_TLSv1_2) are separate
  // from that minimum and survive it, so this process-wide OpenSSL "system_default" section,
  // applied by SSL_CTX_new to every context, leaves TLS 1.3 as the only version offered or
  // accepted. Must run before gRPC creates any credentials.
  static const char kConf[] =
      "fleetfl_conf = fleetfl_init\n"
      "[fleetfl_init]\nssl_conf = fleetfl_ssl\n"
      "[fleetfl_ssl]\nsystem_default = fleetfl_tls\n"
      "[fleetfl_tls]\nMinProtocol = TLSv1.3\nProtocol = -ALL, TLSv1.3\n";
  // Skip the distribution's openssl.cnf: its system_default would compete with ours.
  if (OPENSSL_init_ssl(OPENSSL_INIT_NO_LOAD_CONFIG, nullptr) != 1) {
    return Internal("OpenSSL initialisation failed");
  }
  OPENSSL_load_builtin_modules();
  BIO* bio = BIO_new_mem_buf(kConf, sizeof kConf - 1);
  CONF* conf = NCONF_new(nullptr);
  long line = 0;
  bool ok = bio && conf && NCONF_load_bio(conf, bio, &line) == 1 &&
            CONF_modules_load(conf, "fleetfl_conf", 0) == 1;
  NCONF_free(conf);
  BIO_free(bio);
  if (!ok) {
    ERR_clear_error();
    return Internal("cannot apply the TLS 1.3-only OpenSSL policy");
  }
  // Check it took: a fresh context must refuse anything below 1.3.
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  ok = ctx != nullptr && (SSL_CTX_get_options(ctx) & SSL_OP_NO_TLSv1_2) != 0;
  SSL_CTX_free(ctx);
  if (!ok) return Internal("the TLS 1.3-only OpenSSL policy did not apply");
  return OkStatus();
}

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
  // A client certificate is requested and, when one is sent, verified against the fleet CA.
  // Calls without one reach only Enrollment: AccessControl refuses them everywhere else.
  grpc::SslServerCredentialsOptions ssl(
      opts.client_ca_file.empty()       ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
      : opts.require_client_certificate ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                        : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  if (!opts.client_ca_file.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFile(opts.client_ca_file));
  }
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
    std::string ca = opts.ca_pem;
    if (ca.empty()) {
      if (opts.ca_file.empty()) {
        return InvalidArgument(
            "TLS needs the CA certificate to pin (--ca-cert, $FLEETCTL_CA_CERT or ca_cert:); "
            "pass --insecure to connect in plaintext for development");
      }
      ASSIGN_OR_RETURN(ca, ReadFile(opts.ca_file));
    }
    if (ca.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
      return InvalidArgument((opts.ca_file.empty() ? "pinned CA" : opts.ca_file) +
                             ": not a PEM certificate");
    }
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ca;
    ssl.pem_cert_chain = opts.cert_pem;
    ssl.pem_private_key = opts.key_pem;
    if (ssl.pem_cert_chain.empty() && !opts.cert_file.empty()) {
      ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadFile(opts.cert_file));
      ASSIGN_OR_RETURN(ssl.pem_private_key, ReadFile(opts.key_file));
    }
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
    case StatusCode::kUnauthenticated: code = grpc::StatusCode::UNAUTHENTICATED; break;
    case StatusCode::kPermissionDenied: code = grpc::StatusCode::PERMISSION_DENIED; break;
    case StatusCode::kDataLoss: code = grpc::StatusCode::DATA_LOSS; break;
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
    case grpc::StatusCode::UNAUTHENTICATED: code = StatusCode::kUnauthenticated; break;
    case grpc::StatusCode::PERMISSION_DENIED: code = StatusCode::kPermissionDenied; break;
    case grpc::StatusCode::DATA_LOSS: code = StatusCode::kDataLoss; break;
    default: break;
  }
  return Status(code, status.error_message());
}

bool ParseByteBuffer(const grpc::ByteBuffer& buffer, google::protobuf::Message* out) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return false;
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out->ParseFromString(bytes);
}

}  // namespace fleet
