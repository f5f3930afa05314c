#include "client/client_config.h"

#include <unistd.h>

#include "common/file_util.h"

namespace fleet {

StatusOr<ClientConfig> LoadClientConfig(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseClientConfig(text, path);
}

StatusOr<ClientConfig> ParseClientConfig(const std::string& text, const std::string& path) {
  ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(text, path));
  ASSIGN_OR_RETURN(ConfigMap m, ConfigMap::Create(root, path));
  ClientConfig c;
  std::string base_dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  RETURN_IF_ERROR(m.Get("coordinator", &c.coordinator));
  RETURN_IF_ERROR(m.Get("device_id", &c.device_id));
  if (c.device_id.empty()) {  // a packaged config works unchanged on every machine
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') {
      return InvalidArgument(path + ": no device_id and the hostname is unavailable");
    }
    c.device_id = host;
  }
  if (Status id = ValidateDeviceId(c.device_id); !id.ok()) {
    return InvalidArgument(m.Where("device_id") + ": " + id.message());
  }
  RETURN_IF_ERROR(m.Get("state_dir", &c.state_dir));
  RETURN_IF_ERROR(m.Get("bootstrap", &c.bootstrap));
  if (!c.state_dir.empty() && c.state_dir[0] != '/') c.state_dir = base_dir + "/" + c.state_dir;
  if (!c.bootstrap.empty() && c.bootstrap[0] != '/') c.bootstrap = base_dir + "/" + c.bootstrap;
  RETURN_IF_ERROR(m.Get("torch_threads", &c.torch_threads));
  RETURN_IF_ERROR(m.Get("max_message_mb", &c.max_message_mb));
  RETURN_IF_ERROR(m.Get("poll_wait_ms", &c.poll_wait_ms));
  RETURN_IF_ERROR(m.Get("chunk_kb", &c.chunk_kb));
  if (c.torch_threads == 0 || c.torch_threads > 64) {
    return InvalidArgument(m.Where("torch_threads") + ": must be in 1..64");
  }
  if (c.max_message_mb == 0 || c.max_message_mb > 1024 || c.chunk_kb == 0 ||
      c.chunk_kb * 1024ULL > c.max_message_mb * 1024ULL * 1024ULL / 2) {
    return InvalidArgument(path + ": need 1 <= max_message_mb <= 1024 and 1 <= chunk_kb <= half "
                           "of max_message_mb");
  }
  if (c.poll_wait_ms < 100 || c.poll_wait_ms > 30000) {
    return InvalidArgument(m.Where("poll_wait_ms") + ": must be in 100..30000");
  }
  RETURN_IF_ERROR(m.Get("labels", &c.labels));
  if (c.labels.size() > 32) return InvalidArgument(m.Where("labels") + ": at most 32 labels");
  ASSIGN_OR_RETURN(ConfigMap el, m.Child("eligibility"));
  RETURN_IF_ERROR(el.Get("power_supply_dir", &c.eligibility.power_supply_dir));
  RETURN_IF_ERROR(el.Get("idle_max_load", &c.eligibility.idle_max_load));
  RETURN_IF_ERROR(el.Finish());
  if (!(c.eligibility.idle_max_load > 0)) {
    return InvalidArgument(el.Where("idle_max_load") + ": must be > 0 (load average per core)");
  }
  ASSIGN_OR_RETURN(ConfigMap tls, m.Child("tls"));
  RETURN_IF_ERROR(tls.Get("server_name", &c.tls.server_name));
  RETURN_IF_ERROR(tls.Finish());
  ASSIGN_OR_RETURN(std::vector<ConfigMap> datasets, m.ChildList("datasets"));
  for (auto& dm : datasets) {
    ASSIGN_OR_RETURN(DatasetSpec d, ParseDatasetSpec(std::move(dm), base_dir));
    c.datasets.push_back(std::move(d));
  }
  if (m.Has("control")) {
    ASSIGN_OR_RETURN(ConfigMap cm, m.Child("control"));
    ASSIGN_OR_RETURN(control::ControlConfig cc,
                     control::ParseControlConfig(std::move(cm), c.device_id,
                                                 c.state_dir.empty() ? base_dir : c.state_dir,
                                                 base_dir));
    c.control = std::move(cc);
  }
  RETURN_IF_ERROR(m.Finish());
  return c;
}

}  // namespace fleet
