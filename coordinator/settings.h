// fleet-coordinator's settings: the YAML config file (configs/coordinator.yaml) read over the
// defaults; command-line flags override it in main.cc. Split out of main.cc so the config parser
// has a fuzz target of its own (tests/fuzz). Thread-compatible.
#pragma once

#include <cstdint>
#include <string>

#include "common/grpc_util.h"
#include "common/status.h"

namespace fleet {

struct CoordinatorSettings {
  std::string listen = "127.0.0.1:7443";
  std::string device_cert_ttl = "7d";
  std::string state_dir = "./fleet-state";
  ServerTlsOptions tls;
  uint32_t heartbeat_interval_ms = 1000;
  uint32_t offline_after_ms = 4000;
  uint32_t max_message_mb = 64;
  uint32_t grpc_memory_mb = 256;        // gRPC resource quota; 0: unlimited
  uint32_t stream_idle_timeout_s = 30;  // see fleet::StreamLimits
  uint32_t upload_timeout_s = 300;
  uint32_t watch_timeout_s = 3600;
  uint32_t enroll_burst = 100;  // see fleet::EnrollLimits
  uint32_t enroll_rate_per_minute = 600;
  uint32_t enroll_audit_interval_s = 60;
  std::string log_level = "info";
  std::string port_file;
  std::string ca_endpoint;  // a separate CA (`ca serve`); empty: the CA key is in state_dir/pki
  std::string ca_server_name;
};

// Reads the config `text` (named `source` in errors) over *s: keys it does not name keep their
// values; unknown keys and wrong types are errors naming file, line and key.
Status ParseCoordinatorConfig(const std::string& text, const std::string& source,
                              CoordinatorSettings* s);
Status LoadCoordinatorConfig(const std::string& path, CoordinatorSettings* s);

}  // namespace fleet
