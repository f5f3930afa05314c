#include "common/file_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/log.h"

namespace fleet {
namespace {
Status ErrnoError(const std::string& what, const std::string& path) {
  return Internal(what + " " + path + ": " + std::strerror(errno));
}
std::string DirName(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}
std::string Octal(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}
void SyncDir(const std::string& dir) {
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}
// Writes `contents` to a fresh temporary beside `path` with exactly `mode`, fsynced and closed.
StatusOr<std::string> WriteTemp(const std::string& path, const std::string& contents, int mode) {
  std::string tmp;
  int fd = -1;
  // A collision with a random 64-bit name is a planted file, not chance; a few tries and out.
  for (int attempt = 0; attempt < 4 && fd < 0; ++attempt) {
    tmp = internal::TempNameFor(path);
    StatusOr<int> created = internal::CreateTempFile(tmp);
    if (created.ok()) {
      fd = *created;
    } else if (created.status().code() != StatusCode::kAlreadyExists) {
      return created.status();
    }
  }
  if (fd < 0) return Internal("cannot create a temporary file beside " + path);
  auto fail = [&](const char* what) {
    Status s = ErrnoError(what, tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  };
  size_t off = 0;
  while (off < contents.size()) {
    ssize_t n = ::write(fd, contents.data() + off, contents.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("cannot write");
    }
    off += static_cast<size_t>(n);
  }
  if (::fchmod(fd, static_cast<mode_t>(mode)) != 0) return fail("cannot chmod");
  if (::fsync(fd) != 0) return fail("cannot fsync");
  ::close(fd);
  return tmp;
}
}  // namespace

namespace internal {

std::string TempNameFor(const std::string& path) {
  unsigned char r[8];
  size_t got = 0;
  while (got < sizeof r) {
    ssize_t n = ::getrandom(r + got, sizeof r - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  char hex[17];
  for (size_t i = 0; i < sizeof r; ++i) std::snprintf(hex + 2 * i, 3, "%02x", r[i]);
  return path + ".tmp." + hex;
}

StatusOr<int> CreateTempFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd >= 0) return fd;
  if (errno == EEXIST) {
    return Status(StatusCode::kAlreadyExists,
                  "temporary file " + path + " already exists (not written through)");
  }
  return ErrnoError("cannot create", path);
}

}  // namespace internal

StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open " + path + ": " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Internal("read error on " + path);
  return ss.str();
}

bool FileExists(const std::string& path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0;
}

Status MakeDirs(const std::string& path, int mode) {
  if (path.empty()) return OkStatus();
  std::string partial;
  std::stringstream ss(path);
  std::string part;
  if (path[0] == '/') partial = "/";
  while (std::getline(ss, part, '/')) {
    if (part.empty()) continue;
    partial += part + "/";
    if (::mkdir(partial.c_str(), static_cast<mode_t>(mode)) == 0) {
      // mkdir applied the umask; the mode asked for is the mode wanted.
      if (::chmod(partial.c_str(), static_cast<mode_t>(mode)) != 0) {
        return ErrnoError("cannot chmod " + Octal(static_cast<mode_t>(mode)), partial);
      }
    } else if (errno != EEXIST) {
      return ErrnoError("cannot create directory", partial);
    }
  }
  return OkStatus();
}

Status MakePrivateDir(const std::string& path) {
  if (path.empty()) return InvalidArgument("empty directory name");
  const std::string parent = DirName(path);
  if (parent != "." && parent != "/") RETURN_IF_ERROR(MakeDirs(parent, 0755));
  if (::mkdir(path.c_str(), 0700) == 0) {
    if (::chmod(path.c_str(), 0700) != 0) return ErrnoError("cannot chmod 0700", path);
    return OkStatus();
  }
  if (errno != EEXIST) return ErrnoError("cannot create directory", path);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return ErrnoError("cannot stat", path);
  if (!S_ISDIR(st.st_mode)) return FailedPrecondition(path + " exists and is not a directory");
  if (st.st_uid != ::geteuid()) {
    return FailedPrecondition("directory " + path + " is owned by uid " +
                              std::to_string(st.st_uid) + ", not by this process (uid " +
                              std::to_string(::geteuid()) +
                              "): refusing to keep keys and state in it");
  }
  if ((st.st_mode & S_IWOTH) != 0) {
    return FailedPrecondition("directory " + path + " is world-writable (mode " +
                              Octal(st.st_mode) +
                              "): another user may have planted or replaced files in it; check "
                              "its contents, then `chmod 0700 " +
                              path + "`");
  }
  if ((st.st_mode & 077) != 0) {
    if (::chmod(path.c_str(), 0700) != 0) return ErrnoError("cannot chmod 0700", path);
    FLEET_LOG(Warn) << "directory " << path << " was mode " << Octal(st.st_mode)
                    << " (group/other could enter it); tightened to 0700";
  }
  return OkStatus();
}

Status MakePrivateFile(const std::string& path) {
  // O_NOFOLLOW: a symlink planted at the name is refused, never chmodded or written through.
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return ErrnoError("cannot open", path);
  struct stat st {};
  Status s;
  if (::fstat(fd, &st) != 0) {
    s = ErrnoError("cannot stat", path);
  } else if (!S_ISREG(st.st_mode)) {
    s = FailedPrecondition(path + " is not a regular file");
  } else if ((st.st_mode & 07777) != 0600) {
    // A new file has 0600 minus the umask; an old one may be looser.
    if (::fchmod(fd, 0600) != 0) {
      s = ErrnoError("cannot chmod 0600", path);
    } else if ((st.st_mode & 077) != 0) {
      FLEET_LOG(Warn) << path << " was mode " << Octal(st.st_mode) << "; tightened to 0600";
    }
  }
  ::close(fd);
  return s;
}

int RemoveStaleTempFiles(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  int removed = 0;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    // NAME.tmp.HEX (TempNameFor) or NAME.tmp.PID (older versions); nothing else.
    const size_t at = name.rfind(".tmp.");
    if (at == std::string::npos || at == 0 || at + 5 == name.size()) continue;
    if (name.find_first_not_of("0123456789abcdef", at + 5) != std::string::npos) continue;
    const std::string path = dir + "/" + name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || S_ISDIR(st.st_mode)) continue;
    if (::unlink(path.c_str()) == 0) {
      FLEET_LOG(Info) << "removed stale temporary file " << path << " (left by an interrupted "
                      << "write)";
      ++removed;
    }
  }
  ::closedir(d);
  return removed;
}

Status WriteFileAtomically(const std::string& path, const std::string& contents, int mode) {
  ASSIGN_OR_RETURN(std::string tmp, WriteTemp(path, contents, mode));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Status s = ErrnoError("cannot rename onto", path);
    ::unlink(tmp.c_str());
    return s;
  }
  SyncDir(DirName(path));
  return OkStatus();
}

Status CreateFileAtomically(const std::string& path, const std::string& contents, int mode) {
  ASSIGN_OR_RETURN(std::string tmp, WriteTemp(path, contents, mode));
  // link(2) fails on an existing name, dangling symlinks included: nothing is replaced.
  if (::link(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    if (err == EEXIST) {
      return Status(StatusCode::kAlreadyExists, path + " already exists; not replaced");
    }
    errno = err;
    return ErrnoError("cannot create", path);
  }
  ::unlink(tmp.c_str());
  SyncDir(DirName(path));
  return OkStatus();
}

}  // namespace fleet
