// SQLite job store on real files: round trip, persistence across reopen, schema guard.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include "coordinator/store.h"
#include "test_util.h"

namespace fleet {
namespace {

v1::JobStatus MakeJob(const std::string& id, int64_t created) {
  v1::JobStatus j;
  j.set_id(id);
  j.mutable_spec()->set_name("name-" + id);
  j.mutable_spec()->set_rounds(3);
  j.set_state(v1::JobStatus::RUNNING);
  j.set_created_unix_ms(created);
  return j;
}

TEST(SqliteStore, JobsRoundsAndDevicesSurviveReopen) {
  testing::TempDir dir;
  std::string path = dir.path() + "/c.db";
  {
    auto store = OpenSqliteStore(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    ASSERT_TRUE((*store)->SaveJob(MakeJob("b", 2)).ok());
    ASSERT_TRUE((*store)->SaveJob(MakeJob("a", 1)).ok());
    v1::RoundSummary r;
    r.set_round(1);
    r.set_participants(4);
    r.set_eval_accuracy(0.75);
    ASSERT_TRUE((*store)->AppendRound("a", r).ok());
    auto updated = MakeJob("a", 1);
    updated.set_state(v1::JobStatus::SUCCEEDED);
    updated.set_current_round(3);
    ASSERT_TRUE((*store)->SaveJob(updated).ok());
    v1::DeviceStatus d;
    d.set_id("dev-1");
    d.add_datasets()->set_name("har");
    ASSERT_TRUE((*store)->SaveDevice(d).ok());
  }
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok());
  auto jobs = (*store)->LoadJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0].id(), "a");  // oldest first
  EXPECT_EQ((*jobs)[0].state(), v1::JobStatus::SUCCEEDED);
  EXPECT_EQ((*jobs)[0].current_round(), 3u);
  EXPECT_EQ((*jobs)[0].spec().name(), "name-a");
  ASSERT_EQ((*jobs)[0].rounds_size(), 1);
  EXPECT_DOUBLE_EQ((*jobs)[0].rounds(0).eval_accuracy(), 0.75);
  auto devices = (*store)->LoadDevices();
  ASSERT_TRUE(devices.ok());
  ASSERT_EQ(devices->size(), 1u);
  EXPECT_EQ((*devices)[0].datasets(0).name(), "har");
}

TEST(SqliteStore, UsesWalAndPassesIntegrityCheck) {
  testing::TempDir dir;
  std::string path = dir.path() + "/c.db";
  {
    auto store = OpenSqliteStore(path);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->SaveJob(MakeJob("x", 1)).ok());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  auto one = [&](const char* sql) {
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db, sql, -1, &st, nullptr);
    std::string out;
    if (sqlite3_step(st) == SQLITE_ROW) out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return out;
  };
  EXPECT_EQ(one("PRAGMA journal_mode;"), "wal");
  EXPECT_EQ(one("PRAGMA integrity_check;"), "ok");
  EXPECT_EQ(one("PRAGMA user_version;"), "2");
  // A database from a newer coordinator is refused, not silently rewritten.
  sqlite3_exec(db, "PRAGMA user_version=99;", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  auto store = OpenSqliteStore(path);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("schema version 99"), std::string::npos);
}

TEST(SqliteStore, UnwritableLocationIsAClearError) {
  auto store = OpenSqliteStore("/nonexistent-dir/c.db");
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("/nonexistent-dir/c.db"), std::string::npos);
}

}  // namespace
}  // namespace fleet
