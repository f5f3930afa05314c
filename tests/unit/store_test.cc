// SQLite job store and checkpoint files on real files: round trip, persistence across reopen,
// schema guard and migration, atomic round commits, damaged checkpoints detected.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <fstream>

#include "aggregation/server_optimizer.h"
#include "common/file_util.h"
#include "coordinator/checkpoint.h"
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
    CheckpointRecord cp;
    cp.round = 1;
    cp.file = "round-1.tensors";
    cp.bytes = 10;
    cp.blake2b = std::string(64, 'a');
    auto updated = MakeJob("a", 1);
    updated.set_state(v1::JobStatus::SUCCEEDED);
    updated.set_current_round(3);
    updated.set_restarts(2);
    ASSERT_TRUE((*store)->CommitRound(updated, r, cp, 1).ok());
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
  EXPECT_EQ((*jobs)[0].restarts(), 2u);
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
  EXPECT_EQ(one("PRAGMA user_version;"), "8");
  EXPECT_EQ(one("PRAGMA synchronous;"), "2");  // FULL (per connection: ours sets it on open)
  // A database from a newer coordinator is refused, not silently rewritten.
  sqlite3_exec(db, "PRAGMA user_version=99;", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  auto store = OpenSqliteStore(path);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("schema version 99"), std::string::npos);
}

// Queries one value.
std::string QueryOne(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, sql, -1, &st, nullptr);
  std::string out;
  if (st != nullptr && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) != nullptr) {
    out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

// A file written by the v2 coordinator (the schema as it shipped) opens, migrates to the current
// schema one transaction per version, and keeps every row.
TEST(SqliteStore, MigratesAVersion2Database) {
  testing::TempDir dir;
  std::string path = dir.path() + "/c.db";
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  v1::JobSpec spec;
  spec.set_name("old");
  std::string blob = spec.SerializeAsString();
  std::string sql =
      "CREATE TABLE jobs (id TEXT PRIMARY KEY, name TEXT NOT NULL, state INTEGER NOT NULL, "
      "current_round INTEGER NOT NULL, error TEXT NOT NULL, spec BLOB NOT NULL, created_ms "
      "INTEGER NOT NULL, updated_ms INTEGER NOT NULL);"
      "CREATE TABLE rounds (job_id TEXT NOT NULL REFERENCES jobs(id), round INTEGER NOT NULL, "
      "summary BLOB NOT NULL, PRIMARY KEY (job_id, round));"
      "CREATE TABLE devices (id TEXT PRIMARY KEY, status BLOB NOT NULL);"
      "CREATE TABLE tokens (id TEXT PRIMARY KEY, record BLOB NOT NULL);"
      "CREATE TABLE revocations (device_id TEXT PRIMARY KEY, record BLOB NOT NULL);"
      "PRAGMA user_version=2;";
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO jobs VALUES('j1','old',3,5,'',?,1,2);", -1, &st, nullptr);
  sqlite3_bind_blob(st, 1, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
  ASSERT_EQ(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
  sqlite3_close(db);

  {
    auto store = OpenSqliteStore(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    auto jobs = (*store)->LoadJobs();
    ASSERT_TRUE(jobs.ok());
    ASSERT_EQ(jobs->size(), 1u);
    EXPECT_EQ((*jobs)[0].spec().name(), "old");
    EXPECT_EQ((*jobs)[0].current_round(), 5u);
    EXPECT_EQ((*jobs)[0].restarts(), 0u);
    EXPECT_TRUE((*jobs)[0].last_selected().empty());
    EXPECT_TRUE((*jobs)[0].revealed().empty());
    auto cps = (*store)->LoadCheckpoints("j1");
    ASSERT_TRUE(cps.ok());
    EXPECT_TRUE(cps->empty());
    auto head = (*store)->LoadAuditHead();  // v5: none recorded yet
    ASSERT_TRUE(head.ok());
    EXPECT_FALSE(head->has_value());
  }
  EXPECT_EQ(QueryOne(path, "PRAGMA user_version;"), "8");
  EXPECT_EQ(QueryOne(path, "PRAGMA integrity_check;"), "ok");
}

// CommitRound keeps the newest checkpoint records only and the job's cooldown state;
// DropRoundsAfter forgets later rounds.
TEST(SqliteStore, RoundCommitsPruneAndDropTogether) {
  testing::TempDir dir;
  auto store = OpenSqliteStore(dir.path() + "/c.db");
  ASSERT_TRUE(store.ok());
  v1::JobStatus job = MakeJob("j", 1);
  ASSERT_TRUE((*store)->SaveJob(job).ok());
  for (uint32_t r = 1; r <= 4; ++r) {
    v1::RoundSummary s;
    s.set_round(r);
    CheckpointRecord cp;
    cp.round = r;
    cp.file = "round-" + std::to_string(r) + ".tensors";
    job.set_current_round(r);
    (*job.mutable_last_selected())["dev-" + std::to_string(r)] = r;  // cooldown state
    ASSERT_TRUE((*store)->CommitRound(job, s, cp, r > 1 ? r - 1 : 1).ok());
  }
  auto cps = (*store)->LoadCheckpoints("j");
  ASSERT_TRUE(cps.ok());
  ASSERT_EQ(cps->size(), 2u);
  EXPECT_EQ((*cps)[0].round, 4u);  // newest first
  EXPECT_EQ((*cps)[1].round, 3u);
  ASSERT_TRUE((*store)->DropRoundsAfter("j", 3).ok());
  auto jobs = (*store)->LoadJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ((*jobs)[0].rounds_size(), 3);
  EXPECT_EQ((*jobs)[0].rounds(2).round(), 3u);
  ASSERT_EQ((*jobs)[0].last_selected_size(), 4);  // as the last commit left it
  EXPECT_EQ((*jobs)[0].last_selected().at("dev-4"), 4u);
  cps = (*store)->LoadCheckpoints("j");
  ASSERT_EQ(cps->size(), 1u);
  EXPECT_EQ((*cps)[0].round, 3u);
}

// Cooldown state that does not parse is an error naming the job, not an empty cooldown; the
// bytes stay as they were for inspection.
TEST(SqliteStore, DamagedCooldownStateIsAClearError) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/c.db";
  {
    auto store = OpenSqliteStore(path);
    ASSERT_TRUE(store.ok());
    v1::JobStatus job = MakeJob("j", 1);
    (*job.mutable_last_selected())["dev-1"] = 1;
    ASSERT_TRUE((*store)->SaveJob(job).ok());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE jobs SET last_selected=x'ff' WHERE id='j';", nullptr, nullptr,
                         nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok());
  auto jobs = (*store)->LoadJobs();
  ASSERT_FALSE(jobs.ok());
  EXPECT_NE(jobs.status().message().find("job j has unreadable cooldown state"), std::string::npos)
      << jobs.status().ToString();
  EXPECT_EQ(QueryOne(path, "SELECT hex(last_selected) FROM jobs WHERE id='j';"), "FF");
}

// Revealed secure sums (issue 16) are part of the job row: saved with SaveJob, kept or pruned
// by CommitRound in the same transaction, back after reopening; a damaged record is an error
// naming the job, and its bytes stay for inspection.
TEST(SqliteStore, RevealedSumsSurviveReopenAndDamageIsAClearError) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/c.db";
  {
    auto store = OpenSqliteStore(path);
    ASSERT_TRUE(store.ok());
    v1::JobStatus job = MakeJob("j", 1);
    for (uint32_t attempt : {1u, 2u}) {
      v1::RevealedSum* r = job.add_revealed();
      r->set_round(3);
      r->set_attempt(attempt);
      r->set_model_blake2b(std::string(64, 'c'));
      r->add_devices("dev-" + std::to_string(attempt));
      r->set_unix_ms(1000 + attempt);
    }
    job.mutable_revealed(0)->set_failure("secure aggregate unusable");
    ASSERT_TRUE((*store)->SaveJob(job).ok());
    v1::RoundSummary s;
    s.set_round(3);
    CheckpointRecord cp;
    cp.round = 3;
    job.mutable_revealed()->DeleteSubrange(1, 1);
    ASSERT_TRUE((*store)->CommitRound(job, s, cp, 2).ok());
  }
  {
    auto store = OpenSqliteStore(path);
    ASSERT_TRUE(store.ok());
    auto jobs = (*store)->LoadJobs();
    ASSERT_TRUE(jobs.ok()) << jobs.status().ToString();
    ASSERT_EQ((*jobs)[0].revealed_size(), 1);
    const v1::RevealedSum& r = (*jobs)[0].revealed(0);
    EXPECT_EQ(r.round(), 3u);
    EXPECT_EQ(r.attempt(), 1u);
    EXPECT_EQ(r.model_blake2b(), std::string(64, 'c'));
    ASSERT_EQ(r.devices_size(), 1);
    EXPECT_EQ(r.devices(0), "dev-1");
    EXPECT_EQ(r.failure(), "secure aggregate unusable");
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(
      sqlite3_exec(db, "UPDATE jobs SET revealed=x'ff' WHERE id='j';", nullptr, nullptr, nullptr),
      SQLITE_OK);
  sqlite3_close(db);
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok());
  auto jobs = (*store)->LoadJobs();
  ASSERT_FALSE(jobs.ok());
  EXPECT_NE(jobs.status().message().find("job j has unreadable revealed-sum records"),
            std::string::npos)
      << jobs.status().ToString();
  EXPECT_EQ(QueryOne(path, "SELECT hex(revealed) FROM jobs WHERE id='j';"), "FF");
}

// The fleet-wide table of revealed sums: by model hash across jobs, kept for good, and a damaged
// row is a clear error (the caller then lets nobody join a sum over that model).
TEST(SqliteStore, FleetWideRevealedSumsAreFoundByModelAcrossJobs) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/c.db";
  auto sum = [](const std::string& job, uint32_t attempt, char model, const std::string& dev) {
    v1::RevealedSum r;
    r.set_job_id(job);
    r.set_round(1);
    r.set_attempt(attempt);
    r.set_model_blake2b(std::string(64, model));
    r.add_devices(dev);
    return r;
  };
  {
    auto store = OpenSqliteStore(path);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->SaveRevealedSum(sum("job-a", 1, 'a', "d1")).ok());
    ASSERT_TRUE((*store)->SaveRevealedSum(sum("job-b", 1, 'a', "d2")).ok());
    ASSERT_TRUE((*store)->SaveRevealedSum(sum("job-b", 2, 'b', "d3")).ok());
    EXPECT_FALSE((*store)->SaveRevealedSum(sum("", 1, 'a', "d4")).ok()) << "needs a job id";
  }
  {
    auto store = OpenSqliteStore(path);
    ASSERT_TRUE(store.ok());
    auto over_a = (*store)->LoadRevealedSums(std::string(64, 'a'));
    ASSERT_TRUE(over_a.ok()) << over_a.status().ToString();
    ASSERT_EQ(over_a->size(), 2u);
    EXPECT_EQ((*over_a)[0].job_id(), "job-a");
    EXPECT_EQ((*over_a)[1].job_id(), "job-b");
    EXPECT_EQ((*over_a)[1].devices(0), "d2");
    auto over_c = (*store)->LoadRevealedSums(std::string(64, 'c'));
    ASSERT_TRUE(over_c.ok());
    EXPECT_TRUE(over_c->empty());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE revealed_sums SET record=x'ff' WHERE job_id='job-a';", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok());
  auto damaged = (*store)->LoadRevealedSums(std::string(64, 'a'));
  ASSERT_FALSE(damaged.ok());
  EXPECT_NE(damaged.status().message().find("unreadable revealed-sum record"), std::string::npos)
      << damaged.status().ToString();
}

// Checkpoint files verify against their record: a truncated or altered file is DATA_LOSS with
// the path in the message, and the optimizer state round-trips.
TEST(CheckpointDir, DetectsTruncationAndCorruption) {
  testing::TempDir dir;
  CheckpointDir cps(dir.path());
  ServerOptimizer opt({"adam", 0.1, 0.9, 0.99, 1e-3});
  std::vector<float> x = {1, 2, 3};
  opt.Apply(&x, {0.5f, -0.5f, 0.25f});
  auto rec = cps.Write(7, std::string(1000, 'm'), opt.SaveState());
  ASSERT_TRUE(rec.ok()) << rec.status().ToString();
  std::string model, state;
  ASSERT_TRUE(cps.Read(*rec, &model, &state).ok());
  EXPECT_EQ(model, std::string(1000, 'm'));
  ServerOptimizer restored({"adam", 0.1, 0.9, 0.99, 1e-3});
  ASSERT_TRUE(restored.LoadState(state, 3).ok());
  std::vector<float> a = x, b = x;
  opt.Apply(&a, {0.1f, 0.1f, 0.1f});
  restored.Apply(&b, {0.1f, 0.1f, 0.1f});
  EXPECT_EQ(a, b);  // same moments: bit-identical next step
  EXPECT_FALSE(ServerOptimizer({"yogi", 0.1, 0.9, 0.99, 1e-3}).LoadState(state, 3).ok());
  EXPECT_FALSE(restored.LoadState(state, 4).ok());

  const std::string path = dir.path() + "/round-7.tensors";
  ASSERT_EQ(::truncate(path.c_str(), 500), 0);
  Status s = cps.Read(*rec, &model, &state);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(path), std::string::npos) << s.message();
  ASSERT_TRUE(WriteFileAtomically(path, std::string(999, 'm') + "X").ok());
  s = cps.Read(*rec, &model, &state);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("checksum"), std::string::npos) << s.message();
  ::unlink(path.c_str());
  EXPECT_EQ(cps.Read(*rec, &model, &state).code(), StatusCode::kDataLoss);

  // Older rounds and crash leftovers are removed, the kept round is not.
  ASSERT_TRUE(cps.Write(8, "eight", "").ok());
  std::ofstream(dir.path() + "/round-9.tensors.tmp.123") << "partial";
  cps.RemoveBefore(8);
  EXPECT_FALSE(FileExists(dir.path() + "/round-7.optimizer"));
  EXPECT_FALSE(FileExists(dir.path() + "/round-9.tensors.tmp.123"));
  EXPECT_TRUE(FileExists(dir.path() + "/round-8.tensors"));
}

TEST(SqliteStore, UnwritableLocationIsAClearError) {
  auto store = OpenSqliteStore("/nonexistent-dir/c.db");
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("/nonexistent-dir/c.db"), std::string::npos);
}

}  // namespace
}  // namespace fleet
