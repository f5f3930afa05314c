#include "coordinator/settings.h"

#include "common/config.h"
#include "common/file_util.h"

namespace fleet {

Status ParseCoordinatorConfig(const std::string& text, const std::string& source,
                              CoordinatorSettings* s) {
  ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(text, source));
  ASSIGN_OR_RETURN(ConfigMap m, ConfigMap::Create(root, source));
  RETURN_IF_ERROR(m.Get("listen", &s->listen));
  RETURN_IF_ERROR(m.Get("state_dir", &s->state_dir));
  RETURN_IF_ERROR(m.Get("heartbeat_interval_ms", &s->heartbeat_interval_ms));
  RETURN_IF_ERROR(m.Get("offline_after_ms", &s->offline_after_ms));
  RETURN_IF_ERROR(m.Get("max_message_mb", &s->max_message_mb));
  RETURN_IF_ERROR(m.Get("grpc_memory_mb", &s->grpc_memory_mb));
  RETURN_IF_ERROR(m.Get("stream_idle_timeout_s", &s->stream_idle_timeout_s));
  RETURN_IF_ERROR(m.Get("upload_timeout_s", &s->upload_timeout_s));
  RETURN_IF_ERROR(m.Get("watch_timeout_s", &s->watch_timeout_s));
  RETURN_IF_ERROR(m.Get("enroll_burst", &s->enroll_burst));
  RETURN_IF_ERROR(m.Get("enroll_rate_per_minute", &s->enroll_rate_per_minute));
  RETURN_IF_ERROR(m.Get("enroll_audit_interval_s", &s->enroll_audit_interval_s));
  RETURN_IF_ERROR(m.Get("log_level", &s->log_level));
  RETURN_IF_ERROR(m.Get("device_cert_ttl", &s->device_cert_ttl));
  RETURN_IF_ERROR(m.Get("ca_endpoint", &s->ca_endpoint));
  RETURN_IF_ERROR(m.Get("ca_server_name", &s->ca_server_name));
  ASSIGN_OR_RETURN(ConfigMap tls, m.Child("tls"));
  RETURN_IF_ERROR(tls.Get("cert", &s->tls.cert_file));
  RETURN_IF_ERROR(tls.Get("key", &s->tls.key_file));
  RETURN_IF_ERROR(tls.Finish());
  return m.Finish();
}

Status LoadCoordinatorConfig(const std::string& path, CoordinatorSettings* s) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseCoordinatorConfig(text, path, s);
}

}  // namespace fleet
