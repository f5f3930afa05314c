// fleet-client: the on-device agent. Trains the coordinator's model on local data and returns
// only model parameters and aggregate metrics.
#include <CLI/CLI.hpp>

#include <iostream>

#include "client/client_runner.h"
#include "client/control_stack.h"
#include "client/trainer.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/service.h"
#include "common/signals.h"

namespace {
constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;
}  // namespace

int main(int argc, char** argv) {
  if (fleet::Status tls = fleet::RequireTls13(); !tls.ok()) {
    std::cerr << "fleet-client: " << tls.message() << "\n";
    return 1;
  }
  CLI::App app{"fleet-client: fleetfl device agent. Joins a coordinator, trains its models on "
               "local sensor data that never leaves the device, and returns model updates. With a "
               "control: block in the config it also runs the current global model on live sensor "
               "data (MQTT or CSV replay) and publishes the commands its rules decide."};
  app.set_version_flag("--version", "fleet-client 0.1.0 (protocol v" +
                                        std::to_string(fleet::kProtocolVersion) + ")");
  std::string config_path, coordinator, device_id, server_name, log_level = "info";
  bool insecure = false, check = false;
  app.add_option("-c,--config", config_path, "YAML client config")->required();
  app.add_option("--coordinator", coordinator, "host:port (overrides the config)");
  app.add_option("--device-id", device_id, "device id (overrides the config)");
  std::string bootstrap, state_dir;
  app.add_option("--bootstrap", bootstrap,
                 "bootstrap YAML: coordinator, pinned CA, enrollment token (default "
                 "/etc/fleetfl/bootstrap.yaml; overrides the config)");
  app.add_option("--state-dir", state_dir,
                 "where the device key and certificate live (overrides the config)");
  app.add_option("--server-name", server_name, "expected name in the coordinator's certificate");
  app.add_flag("--insecure", insecure,
               "connect in plaintext without TLS or a device certificate, and accept unsigned "
               "models (development only; prints a warning)");
  app.add_flag("--check", check, "load the config and data, print a summary and exit");
  app.add_option("--log-level", log_level, "debug|info|warn|error");
  std::string fault;
  // Hidden (empty group): a test-only failpoint, see ClientConfig::fault_exit_before.
  app.add_option("--fault-exit-before", fault)
      ->check(CLI::IsMember({"advertise", "share_keys", "masked_input", "consistency", "unmask"}))
      ->group("");
  std::string hang;
  // Hidden: hang (alive, heartbeating) instead of sending this step or a plain update.
  app.add_option("--fault-hang-before", hang)
      ->check(CLI::IsMember(
          {"advertise", "share_keys", "masked_input", "consistency", "unmask", "upload"}))
      ->group("");
  bool corrupt_input = false;  // hidden, test-only: see ClientConfig::fault_corrupt_input
  app.add_flag("--fault-corrupt-input", corrupt_input)->group("");
  int64_t clock_offset_s = 0;  // hidden, test-only: shifts the certificate clock
  app.add_option("--clock-offset-s", clock_offset_s)->group("");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  fleet::LogLevel level;
  if (!fleet::ParseLogLevel(log_level, &level)) {
    std::cerr << "fleet-client: log level '" << log_level
              << "' is not one of debug, info, warn, error\n";
    return kExitUsage;
  }
  fleet::SetLogLevel(level);

  auto config = fleet::LoadClientConfig(config_path, state_dir);
  if (!config.ok()) {
    std::cerr << "fleet-client: " << config.status().message() << "\n";
    return kExitUsage;
  }
  if (!coordinator.empty()) config->coordinator = coordinator;
  if (!device_id.empty()) config->device_id = device_id;
  if (!server_name.empty()) config->tls.server_name = server_name;
  config->tls.insecure = insecure;
  config->fault_exit_before = fault;
  config->fault_hang_before = hang;
  config->fault_corrupt_input = corrupt_input;
  config->clock_offset_s = clock_offset_s;
  if (!bootstrap.empty()) config->bootstrap = bootstrap;
  if (!state_dir.empty()) config->state_dir = state_dir;
  fleet::SetLogComponent("client/" + config->device_id);
  // The device key, certificate, kept model and raw readings live here: owner-only, and no
  // temporaries left by a crash (they may hold a key).
  if (!check && !config->state_dir.empty()) {
    if (fleet::Status st = fleet::MakePrivateDir(config->state_dir); !st.ok()) {
      FLEET_LOG(Error) << "state_dir: " << st.message();
      return kExitError;
    }
    fleet::RemoveStaleTempFiles(config->state_dir);
  }
  fleet::ConfigureTorchThreads(static_cast<int>(config->torch_threads));

  std::unique_ptr<fleet::ClientRunner> runner;
  std::mutex mu;  // guards `runner` between main and the signal thread
  fleet::HandleTerminationSignals([&](int) {
    std::lock_guard<std::mutex> lock(mu);
    if (runner) runner->Stop();
    else std::_Exit(kExitOk);  // still loading data: nothing to flush or clean up
  });

  // The control loop starts before anything that needs the coordinator: inference and the
  // safe default action do not wait for enrollment, data loading or a reachable network.
  std::unique_ptr<fleet::ControlStack> control;
  fleet::ControlHooks hooks;
  if (config->control && !check) {
    auto started = fleet::ControlStack::Start(*config->control, config->device_id);
    if (!started.ok()) {
      FLEET_LOG(Error) << "control: " << started.status().message();
      const fleet::StatusCode code = started.status().code();
      return code == fleet::StatusCode::kInvalidArgument || code == fleet::StatusCode::kNotFound
                 ? kExitUsage
                 : kExitError;
    }
    control = std::move(started).value();
    hooks = control->Hooks();
  }
  auto created = fleet::ClientRunner::Create(std::move(config).value(), std::move(hooks));
  if (!created.ok()) {
    FLEET_LOG(Error) << created.status().message();
    return created.status().code() == fleet::StatusCode::kInvalidArgument ? kExitUsage
                                                                           : kExitError;
  }
  if (check) {
    std::cout << "fleet-client: config and data OK\n";
    return kExitOk;
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    runner = std::move(created).value();
  }
  fleet::NotifyReady("device " + runner->device_id() + " started");
  fleet::Status s;
  {
    fleet::Watchdog watchdog([&] { return runner->Healthy(); });
    s = runner->Run();
  }
  fleet::NotifyStopping();
  if (!s.ok()) {
    FLEET_LOG(Error) << s.message();
    return kExitError;
  }
  FLEET_LOG(Info) << "stopped";
  return kExitOk;
}
