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
// Writes one line. Control characters in `message` (C0, DEL, C1 U+0080..U+009F), bidirectional
// formatting characters (U+061C, U+200E/F, U+202A..U+202E, U+2066..U+2069), bytes that are not
// UTF-8, and backslashes are escaped (\n, \r, \t, \\, \xHH, \uHHHH), so text another party
// sent (a device's decline reason, a label) can neither start a forged log line, drive a
// terminal, nor reorder what a reader sees.
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
