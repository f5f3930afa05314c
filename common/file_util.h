// File helpers. WriteFileAtomically never leaves a half-written file under `path`: it writes a
// temporary sibling, fsyncs it, renames it over `path` and fsyncs the directory.
#pragma once

#include <string>

#include "common/status.h"

namespace fleet {

StatusOr<std::string> ReadFile(const std::string& path);
Status WriteFileAtomically(const std::string& path, const std::string& contents, int mode = 0644);
Status MakeDirs(const std::string& path);
bool FileExists(const std::string& path);

}  // namespace fleet
