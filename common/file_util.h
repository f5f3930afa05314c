// File helpers. WriteFileAtomically never leaves a half-written file under `path`: it writes a
// temporary sibling, fsyncs it, renames it over `path` and fsyncs the directory. The temporary
// has a fresh random name and is created with O_CREAT|O_EXCL|O_NOFOLLOW, 0600, so a file or
// symlink planted at that name (by another user, or left by a crash) is never written through.
//
// Permissions are exact, whatever the process umask: private directories are 0700 and files
// get the mode asked for (fchmod after creation, because the umask only ever removes bits).
// Thread-compatible: calls on different paths may run concurrently.
#pragma once

#include <string>

#include "common/status.h"

namespace fleet {

StatusOr<std::string> ReadFile(const std::string& path);
// Replaces `path` with `contents` (mode exactly `mode`).
Status WriteFileAtomically(const std::string& path, const std::string& contents, int mode = 0600);
// Like WriteFileAtomically, but never replaces: AlreadyExists when `path` is already there (the
// complete file appears at once, via link(2)). For keys that must not be overwritten.
Status CreateFileAtomically(const std::string& path, const std::string& contents, int mode = 0600);
// Creates `path` and any missing parents; directories it creates get exactly `mode`. Existing
// ones are left as they are.
Status MakeDirs(const std::string& path, int mode = 0755);
// A directory only this user can enter (state directories: keys, databases, checkpoints).
// Creates it (missing parents 0755, itself 0700). An existing directory owned by this user that
// is group- or other-accessible is tightened to 0700 with a warning (directories made by older
// versions were 0755). Refused (FailedPrecondition, nothing changed): a directory owned by
// another user, or one that is world-writable (another user may have planted or replaced files
// in it; the operator should look before using it).
Status MakePrivateDir(const std::string& path);
// Creates `path` if missing, 0600; an existing file with group or other bits is tightened to
// 0600 with a warning. Does not follow a symlink when creating.
Status MakePrivateFile(const std::string& path);
// Removes temporary files (`NAME.tmp.SUFFIX`) that a crash left in `dir` (not recursive; a
// symlink is removed, never its target). Call at start, before anything writes into `dir`.
// Returns how many it removed.
int RemoveStaleTempFiles(const std::string& dir);
bool FileExists(const std::string& path);

namespace internal {
// Creates the temporary file `path` for writing: O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC,
// 0600. Fails (AlreadyExists) on anything already at `path`, a dangling symlink included.
StatusOr<int> CreateTempFile(const std::string& path);
// A fresh temporary name beside `path`: `path.tmp.<16 random hex digits>`.
std::string TempNameFor(const std::string& path);
}  // namespace internal

}  // namespace fleet
