// Minimal thread-safe logging to stderr: one line per message (control characters escaped), UTC
// timestamp, level, component.
// Never log keys, raw sensor data or model parameters; log shapes, counts and reasons.
#pragma once

#include <sstream>
#include <string>

namespace fleet {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void SetLogLevel(LogLevel level);
bool ParseLogLevel(const std::string& name, LogLevel* level);
void SetLogComponent(const std::string& component);  // e.g. "coordinator", "client/dev-3"
bool LogEnabled(LogLevel level);
// Writes one line. Control characters in `message` (C0, DEL and the C1 range U+0080..U+009F)
// and backslashes are escaped (\n, \r, \t, \\, \xHH, \u00HH), so text another party sent
// (a device's decline reason, a label) can neither start a forged log line nor drive a terminal.
void LogLine(LogLevel level, const std::string& message);
// The escaping LogLine applies.
std::string EscapeForLog(const std::string& text);

namespace internal {
class LogMessage {
 public:
  explicit LogMessage(LogLevel level) : level_(level) {}
  ~LogMessage() { LogLine(level_, stream_.str()); }
  std::ostringstream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};
}  // namespace internal

}  // namespace fleet

// A for-statement rather than if/else, so `if (x) FLEET_LOG(Info) << y; else ...` is unambiguous.
#define FLEET_LOG(level)                                                                   \
  for (bool fleet_log_on_ = ::fleet::LogEnabled(::fleet::LogLevel::k##level); fleet_log_on_; \
       fleet_log_on_ = false)                                                              \
  ::fleet::internal::LogMessage(::fleet::LogLevel::k##level).stream()
