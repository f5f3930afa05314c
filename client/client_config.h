// fleet-client configuration (YAML). See README "Client config reference".
#pragma once

#include <string>
#include <vector>

#include <map>
#include <optional>

#include "client/control/control_config.h"
#include "client/data_source.h"
#include "client/eligibility.h"
#include "common/grpc_util.h"
#include "common/status.h"

namespace fleet {

struct ClientConfig {
  std::string coordinator;  // host:port; empty: the bootstrap file's (else 127.0.0.1:7443)
  std::string device_id;
  // Enrollment material (device.key, device.pem, ca.pem, model-signing.pub) lives here.
  std::string state_dir;
  // coordinator address, pinned CA and bootstrap token (see client/identity.h); used to enroll
  // when state_dir holds no valid certificate.
  std::string bootstrap = "/etc/fleetfl/bootstrap.yaml";
  ClientTlsOptions tls;
  uint32_t torch_threads = 1;
  uint32_t max_message_mb = 64;
  uint32_t poll_wait_ms = 5000;      // FetchTask long-poll
  uint32_t chunk_kb = 1024;          // PushUpdate chunk size
  std::vector<DatasetSpec> datasets;
  std::map<std::string, std::string> labels;  // reported at Join; jobs select on them
  EligibilitySources eligibility;             // what heartbeats report (see eligibility.h)
  // Real-time inference and control on live sensor data (README "Inference and control").
  std::optional<control::ControlConfig> control;
  // Fault injection for integration tests (command line only): exit abruptly right before
  // sending this SecAgg+ step: advertise|share_keys|masked_input|consistency|unmask.
  std::string fault_exit_before;
  // Likewise, but hang there (heartbeats go on) until the client is stopped: a stuck device.
  std::string fault_hang_before;
  // Likewise: a corrupt device. Adds 2^(modulus_bits-1) to coordinate 0 of its quantized input
  // before masking, so the unmasked sum is out of range.
  bool fault_corrupt_input = false;
  int64_t clock_offset_s = 0;  // test-only: shifts the clock of certificate decisions
};

// Relative data paths resolve against the config file's directory.
StatusOr<ClientConfig> LoadClientConfig(const std::string& path);
// The same for config text read from `path` (which only names it and places relative paths).
StatusOr<ClientConfig> ParseClientConfig(const std::string& text, const std::string& path);

}  // namespace fleet
