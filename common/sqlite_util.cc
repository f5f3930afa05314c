#include "common/sqlite_util.h"

#include "common/file_util.h"

namespace fleet {

Status SqliteExec(sqlite3* db, const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return Internal("sqlite: " + msg);
  }
  return OkStatus();
}

StatusOr<sqlite3*> SqliteOpen(const std::string& path) {
  // Owner-only before SQLite opens it: SQLite gives the -wal and -shm files it creates the
  // database file's permissions. Ones an older version left looser are tightened too.
  Status priv = MakePrivateFile(path);
  if (!priv.ok()) return Unavailable("cannot open " + path + ": " + priv.message());
  for (const char* suffix : {"-wal", "-shm", "-journal"}) {
    const std::string side = path + suffix;
    if (FileExists(side)) {
      priv = MakePrivateFile(side);
      if (!priv.ok()) return Unavailable("cannot open " + path + ": " + priv.message());
    }
  }
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW,
      nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return Unavailable("cannot open " + path + ": " + msg);
  }
  sqlite3_busy_timeout(db, 5000);
  return db;
}

}  // namespace fleet
