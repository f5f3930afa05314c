// Helpers shared by unit tests: temporary directories and files.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace fleet::testing {

// A fresh directory under $TMPDIR, removed with its contents when the object dies.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base ? base : "/tmp") + "/fleet-test.XXXXXX";
    path_ = mkdtemp(tmpl.data()) ? tmpl : "";
  }
  ~TempDir() {
    if (!path_.empty()) std::system(("rm -rf '" + path_ + "'").c_str());
  }
  const std::string& path() const { return path_; }
  std::string Write(const std::string& name, const std::string& contents) const {
    std::string p = path_ + "/" + name;
    std::ofstream(p) << contents;
    return p;
  }

 private:
  std::string path_;
};

// Polls `pred` every 5 ms for up to 10 s.
template <typename Pred>
bool WaitForTrue(Pred pred) {
  for (int i = 0; i < 2000; ++i) {
    if (pred()) return true;
    usleep(5000);
  }
  return pred();
}

}  // namespace fleet::testing
