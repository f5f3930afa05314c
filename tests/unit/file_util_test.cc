// File hygiene (issue 16, item 7): private state directories and databases whatever the umask,
// temporary files that a planted file or symlink cannot redirect, stale temporaries removed.
#include "common/file_util.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "common/sqlite_util.h"
#include "coordinator/store.h"
#include "test_util.h"

namespace fleet {
namespace {

// Runs the test under umask 000 (the most permissive) and restores the old one.
class PermissiveUmask : public ::testing::Test {
 protected:
  void SetUp() override { old_ = ::umask(0); }
  void TearDown() override { ::umask(old_); }
  mode_t old_ = 022;
  testing::TempDir dir_;
};

unsigned Mode(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

TEST_F(PermissiveUmask, PrivateDirectoriesAre0700AndLooseOnesAreTightened) {
  const std::string state = dir_.path() + "/var/lib/state";
  ASSERT_TRUE(MakePrivateDir(state).ok());
  EXPECT_EQ(Mode(state), 0700u);
  EXPECT_EQ(Mode(dir_.path() + "/var/lib"), 0755u) << "parents are ordinary directories";

  // A state directory an older version made 0755 is tightened.
  const std::string old = dir_.path() + "/old";
  ASSERT_EQ(::mkdir(old.c_str(), 0755), 0);
  ASSERT_TRUE(MakePrivateDir(old).ok());
  EXPECT_EQ(Mode(old), 0700u);

  // A world-writable one is refused and left alone: someone may have planted files in it.
  const std::string shared = dir_.path() + "/shared";
  ASSERT_EQ(::mkdir(shared.c_str(), 0777), 0);
  Status s = MakePrivateDir(shared);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("world-writable"), std::string::npos) << s.message();
  EXPECT_EQ(Mode(shared), 0777u);

  // One owned by another user is refused.
  if (::geteuid() == 0) {
    const std::string theirs = dir_.path() + "/theirs";
    ASSERT_EQ(::mkdir(theirs.c_str(), 0700), 0);
    ASSERT_EQ(::chown(theirs.c_str(), 65534, 65534), 0);
    Status t = MakePrivateDir(theirs);
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.message().find("owned by uid 65534"), std::string::npos) << t.message();
  }
  // Directories made for a private file's parent get the mode asked for.
  ASSERT_TRUE(MakeDirs(dir_.path() + "/a/b", 0700).ok());
  EXPECT_EQ(Mode(dir_.path() + "/a"), 0700u);
  EXPECT_EQ(Mode(dir_.path() + "/a/b"), 0700u);
}

TEST_F(PermissiveUmask, FilesGetExactlyTheirMode) {
  const std::string key = dir_.path() + "/device.key";
  ASSERT_TRUE(WriteFileAtomically(key, "secret").ok());
  EXPECT_EQ(Mode(key), 0600u);
  ASSERT_TRUE(WriteFileAtomically(dir_.path() + "/public.pem", "cert", 0644).ok());
  EXPECT_EQ(Mode(dir_.path() + "/public.pem"), 0644u);
  ASSERT_TRUE(CreateFileAtomically(dir_.path() + "/audit.key", "k").ok());
  EXPECT_EQ(Mode(dir_.path() + "/audit.key"), 0600u);
  const std::string loose = dir_.Write("loose", "x");
  ASSERT_EQ(::chmod(loose.c_str(), 0666), 0);
  ASSERT_TRUE(MakePrivateFile(loose).ok());
  EXPECT_EQ(Mode(loose), 0600u);
}

TEST_F(PermissiveUmask, SqliteDatabasesAndTheirWalAndShmFilesAre0600) {
  const std::string db_path = dir_.path() + "/coordinator.db";
  {
    auto store = OpenSqliteStore(db_path);
    ASSERT_TRUE(store.ok()) << store.status().message();
    v1::JobStatus job;
    job.set_id("j");
    ASSERT_TRUE((*store)->SaveJob(job).ok());
    // While open, the WAL and shared-memory files exist.
    EXPECT_EQ(Mode(db_path), 0600u);
    EXPECT_EQ(Mode(db_path + "-wal"), 0600u);
    EXPECT_EQ(Mode(db_path + "-shm"), 0600u);
  }
  // Files an older version left 0644 are tightened when opened again.
  const std::string older = dir_.path() + "/samples.db";
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(older.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(
        sqlite3_exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x);", nullptr, nullptr, nullptr),
        SQLITE_OK);
    sqlite3_close(db);
    ASSERT_EQ(::chmod(older.c_str(), 0644), 0);
  }
  auto db = SqliteOpen(older);
  ASSERT_TRUE(db.ok()) << db.status().message();
  ASSERT_TRUE(SqliteExec(*db, "INSERT INTO t VALUES(1);").ok());
  EXPECT_EQ(Mode(older), 0600u);
  EXPECT_EQ(Mode(older + "-wal"), 0600u);
  sqlite3_close(*db);
}

TEST(TempFiles, APlantedSymlinkAtTheTemporaryNameIsNotFollowed) {
  testing::TempDir dir;
  const std::string victim = dir.Write("victim", "precious");
  const std::string path = dir.path() + "/device.key";
  // The name older versions used (path.tmp.PID), planted as a symlink to the victim.
  const std::string predictable = path + ".tmp." + std::to_string(::getpid());
  ASSERT_EQ(::symlink(victim.c_str(), predictable.c_str()), 0);
  ASSERT_TRUE(WriteFileAtomically(path, "new key").ok());
  EXPECT_EQ(ReadFile(victim).value(), "precious");
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode)) << "the target is a file, not the planted link";
  EXPECT_EQ(ReadFile(path).value(), "new key");

  // Whatever the name, creating a temporary never goes through something already there: a
  // symlink (dangling or not) or a file.
  auto through_link = internal::CreateTempFile(predictable);
  ASSERT_FALSE(through_link.ok());
  EXPECT_EQ(through_link.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(ReadFile(victim).value(), "precious");
  const std::string dangling = dir.path() + "/x.tmp.0123456789abcdef";
  ASSERT_EQ(::symlink((dir.path() + "/created-by-attacker").c_str(), dangling.c_str()), 0);
  EXPECT_FALSE(internal::CreateTempFile(dangling).ok());
  EXPECT_FALSE(FileExists(dir.path() + "/created-by-attacker"));
  // Nor does creating a file that must not be replaced.
  EXPECT_EQ(CreateFileAtomically(dangling, "k").code(), StatusCode::kAlreadyExists);
  EXPECT_FALSE(FileExists(dir.path() + "/created-by-attacker"));
  // Two writes never share a temporary name.
  EXPECT_NE(internal::TempNameFor(path), internal::TempNameFor(path));
}

TEST(TempFiles, StaleTemporariesFromACrashAreRemoved) {
  testing::TempDir dir;
  const std::string victim = dir.Write("victim", "precious");
  dir.Write("device.key.tmp.12345", "half a key");            // older versions: .tmp.PID
  dir.Write("round-3.tensors.tmp.0123456789abcdef", "half");  // TempNameFor
  ASSERT_EQ(::symlink(victim.c_str(), (dir.path() + "/ca.pem.tmp.ab").c_str()), 0);
  dir.Write("notes.tmp.txt", "not ours");
  dir.Write("device.pem", "kept");
  EXPECT_EQ(RemoveStaleTempFiles(dir.path()), 3);
  EXPECT_FALSE(FileExists(dir.path() + "/device.key.tmp.12345"));
  EXPECT_FALSE(FileExists(dir.path() + "/round-3.tensors.tmp.0123456789abcdef"));
  EXPECT_EQ(ReadFile(victim).value(), "precious") << "a symlink is removed, not its target";
  EXPECT_TRUE(FileExists(dir.path() + "/notes.tmp.txt"));
  EXPECT_TRUE(FileExists(dir.path() + "/device.pem"));
}

}  // namespace
}  // namespace fleet
