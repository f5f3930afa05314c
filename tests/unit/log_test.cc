// Log lines stay one line, whatever text another party put into a message.
#include "common/log.h"

#include <gtest/gtest.h>

namespace fleet {
namespace {

TEST(Log, ControlCharactersAndBackslashesAreEscaped) {
  EXPECT_EQ(EscapeForLog("plain text, UTF-8 \xc3\xa9 \xe2\x82\xac"),
            "plain text, UTF-8 \xc3\xa9 \xe2\x82\xac");
  EXPECT_EQ(EscapeForLog("a\nb\rc\td"), "a\\nb\\rc\\td");
  EXPECT_EQ(EscapeForLog("\x1b[2J\x07\x7f"), "\\x1b[2J\\x07\\x7f");
  EXPECT_EQ(EscapeForLog(std::string("nul\0end", 7)), "nul\\x00end");
  EXPECT_EQ(EscapeForLog("C1 \xc2\x9b"
                         "31m"),
            "C1 \\u009b31m");                       // CSI in its C1 form
  EXPECT_EQ(EscapeForLog("\xc2\xa0"), "\xc2\xa0");  // U+00A0 is not a control
  EXPECT_EQ(EscapeForLog("raw \x9b"
                         "31m \xff"),
            "raw \\x9b31m \\xff");                                         // not UTF-8: bytes
  EXPECT_EQ(EscapeForLog("cut \xc3"), "cut \\xc3");                        // a truncated sequence
  EXPECT_EQ(EscapeForLog("abc\xe2\x80\xaetxt.exe"), "abc\\u202etxt.exe");  // bidi override
  // A forged escape is told apart from a real one.
  EXPECT_EQ(EscapeForLog("looks like \\n"), "looks like \\\\n");
}

TEST(Log, AMessageWithANewlineIsWrittenAsOneLine) {
  ::testing::internal::CaptureStderr();
  LogLine(LogLevel::kWarn,
          "device d declined: x\n2026-01-01T00:00:00.000Z ERROR coordinator: forged");
  const std::string out = ::testing::internal::GetCapturedStderr();
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.find('\n'), out.size() - 1) << out;
  EXPECT_NE(out.find("declined: x\\n2026-01-01T00:00:00.000Z ERROR coordinator: forged"),
            std::string::npos)
      << out;
}

}  // namespace
}  // namespace fleet
