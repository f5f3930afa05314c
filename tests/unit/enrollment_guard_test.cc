// The pieces that keep enrollment from taking over identities or flooding the coordinator, on
// real files with an injected clock: DeviceCertificates (one current certificate per id, on the
// SQLite store, and the v6 -> v7 migration's legacy marks), RateLimiter and RefusalLog.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "coordinator/device_certs.h"
#include "coordinator/rate_limiter.h"
#include "coordinator/refusal_log.h"
#include "coordinator/store.h"
#include "test_util.h"

namespace fleet {
namespace {

using State = DeviceCertRecord::State;
constexpr int64_t kNow = 1'800'000'000;

TEST(DeviceCertificates, OneCurrentCertificatePerIdDurably) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/c.db";
  {
    auto store = std::move(OpenSqliteStore(path)).value();
    DeviceCertificates certs(store.get());
    ASSERT_TRUE(certs.Load().ok());
    EXPECT_TRUE(certs.MayEnroll("dev-1", kNow).ok());
    ASSERT_TRUE(certs.Install("dev-1", "aa", kNow + 100, kNow, "").ok());
    EXPECT_TRUE(certs.CheckCurrent("dev-1", "aa", kNow + 100, kNow).ok());
    Status other = certs.CheckCurrent("dev-1", "bb", kNow + 100, kNow);
    EXPECT_EQ(other.code(), StatusCode::kUnauthenticated);
    EXPECT_NE(other.message().find("replaced it with aa"), std::string::npos) << other.message();
    // A second enrollment while "aa" is valid is refused, also at Install (a racing one).
    EXPECT_EQ(certs.MayEnroll("dev-1", kNow).code(), StatusCode::kFailedPrecondition);
    EXPECT_EQ(certs.Install("dev-1", "bb", kNow + 100, kNow, "").status().code(),
              StatusCode::kFailedPrecondition);
    // Once it expired, the id may enroll again.
    EXPECT_TRUE(certs.MayEnroll("dev-1", kNow + 100).ok());
    // A renewal must come from the current certificate.
    EXPECT_EQ(certs.Install("dev-1", "cc", kNow + 200, kNow, "bb").status().code(),
              StatusCode::kFailedPrecondition);
    auto previous = certs.Install("dev-1", "cc", kNow + 200, kNow, "aa");
    ASSERT_TRUE(previous.ok());
    ASSERT_TRUE(previous->has_value());
    EXPECT_EQ((*previous)->serial, "aa");
    EXPECT_FALSE(certs.CheckCurrent("dev-1", "aa", kNow + 100, kNow).ok());
    // An issue that cannot complete puts the old record back.
    ASSERT_TRUE(certs.Restore("dev-1", *previous).ok());
    EXPECT_TRUE(certs.CheckCurrent("dev-1", "aa", kNow + 100, kNow).ok());
    DeviceCertificates::Previous before_reset;
    ASSERT_TRUE(certs.Reset("dev-1", kNow, &before_reset).ok());
    EXPECT_EQ(before_reset->serial, "aa");
    Status reset = certs.CheckCurrent("dev-1", "aa", kNow + 100, kNow);
    EXPECT_NE(reset.message().find("retired by `fleetctl device reset`"), std::string::npos);
    EXPECT_TRUE(certs.MayEnroll("dev-1", kNow).ok());
    // Restoring "no record" removes the row.
    ASSERT_TRUE(certs.Install("dev-2", "dd", kNow + 100, kNow, "").ok());
    ASSERT_TRUE(certs.Restore("dev-2", std::nullopt).ok());
    EXPECT_FALSE(certs.Get("dev-2").has_value());
  }
  auto store = std::move(OpenSqliteStore(path)).value();
  DeviceCertificates certs(store.get());
  ASSERT_TRUE(certs.Load().ok());
  ASSERT_TRUE(certs.Get("dev-1").has_value());
  EXPECT_EQ(certs.Get("dev-1")->state, State::kReset);
  EXPECT_FALSE(certs.CheckCurrent("dev-1", "aa", kNow + 100, kNow).ok());
  EXPECT_FALSE(certs.Get("dev-2").has_value());
}

// A v6 database: devices that joined then have certificates nobody recorded. They are marked
// legacy by the migration: refused enrollment (their certificate may still be valid) until the
// first certificate they present is adopted, or an admin resets them. Revoked ones stay barred.
TEST(DeviceCertificates, TheV7MigrationMarksDevicesThatJoinedBeforeAsLegacy) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/c.db";
  {
    auto store = std::move(OpenSqliteStore(path)).value();
    v1::DeviceStatus d;
    d.set_id("old-1");
    ASSERT_TRUE(store->SaveDevice(d).ok());
    d.set_id("old-2");
    ASSERT_TRUE(store->SaveDevice(d).ok());
    v1::DeviceRevocation r;
    r.set_device_id("old-2");
    ASSERT_TRUE(store->SaveRevocation(r).ok());
  }
  // Back to v6, as a coordinator of the previous version left it.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(
      sqlite3_exec(db, "DROP TABLE device_certs; DROP TABLE revealed_sums; PRAGMA user_version=6;",
                   nullptr, nullptr, nullptr),
      SQLITE_OK);
  sqlite3_close(db);

  auto store = std::move(OpenSqliteStore(path)).value();
  DeviceCertificates certs(store.get());
  ASSERT_TRUE(certs.Load().ok());
  ASSERT_TRUE(certs.Get("old-1").has_value());
  EXPECT_EQ(certs.Get("old-1")->state, State::kLegacy);
  EXPECT_FALSE(certs.Get("old-2").has_value()) << "revoked: no mark needed";
  Status may = certs.MayEnroll("old-1", kNow);
  EXPECT_EQ(may.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(may.message().find("fleetctl device reset old-1"), std::string::npos);
  EXPECT_TRUE(certs.MayEnroll("never-seen", kNow).ok());
  // The first certificate presented becomes the current one; no other after it.
  EXPECT_TRUE(certs.CheckCurrent("old-1", "11", kNow + 50, kNow).ok());
  EXPECT_EQ(certs.Get("old-1")->state, State::kCurrent);
  EXPECT_FALSE(certs.CheckCurrent("old-1", "22", kNow + 50, kNow).ok());
  EXPECT_EQ(certs.MayEnroll("old-1", kNow).code(), StatusCode::kFailedPrecondition);
}

TEST(RateLimiter, BurstThenRatePerPeerWithARetryTime) {
  auto now = RateLimiter::Clock::time_point() + std::chrono::hours(1);
  RateLimiter limiter(3, 60, 10000, [&] { return now; });  // one a second after the burst
  std::chrono::milliseconds wait{0};
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.Allow("10.0.0.1", &wait)) << i;
  EXPECT_FALSE(limiter.Allow("10.0.0.1", &wait));
  EXPECT_EQ(wait.count(), 1000);
  EXPECT_TRUE(limiter.Allow("10.0.0.2", &wait)) << "each peer has its own bucket";
  now += std::chrono::milliseconds(600);
  EXPECT_FALSE(limiter.Allow("10.0.0.1", &wait));
  EXPECT_EQ(wait.count(), 400);
  now += std::chrono::milliseconds(400);
  EXPECT_TRUE(limiter.Allow("10.0.0.1", &wait));
  EXPECT_FALSE(limiter.Allow("10.0.0.1", &wait));
  now += std::chrono::hours(1);  // refills to the burst, not beyond
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.Allow("10.0.0.1", &wait));
  EXPECT_FALSE(limiter.Allow("10.0.0.1", &wait));
}

TEST(RateLimiter, PeersBeyondTheTableShareOneBucket) {
  auto now = RateLimiter::Clock::time_point() + std::chrono::hours(1);
  RateLimiter limiter(2, 60, 2, [&] { return now; });
  std::chrono::milliseconds wait{0};
  EXPECT_TRUE(limiter.Allow("a", &wait));
  EXPECT_TRUE(limiter.Allow("b", &wait));
  // The table is full and nobody's bucket has refilled: new peers share the overflow bucket.
  EXPECT_TRUE(limiter.Allow("c", &wait));
  EXPECT_TRUE(limiter.Allow("d", &wait));
  EXPECT_FALSE(limiter.Allow("e", &wait));
  EXPECT_FALSE(limiter.Allow("f", &wait));
  // Once a peer's bucket is full again it is forgotten and a new peer gets its own.
  now += std::chrono::seconds(5);
  EXPECT_TRUE(limiter.Allow("g", &wait));
  EXPECT_TRUE(limiter.Allow("g", &wait));
  EXPECT_FALSE(limiter.Allow("g", &wait));
}

class RefusalFixture : public ::testing::Test {
 protected:
  std::unique_ptr<AuditLog> Open() {
    AuditLogOptions o;
    o.path = dir_.path() + "/audit.log";
    o.key = AuditKey::Generate();
    auto log = AuditLog::Open(std::move(o));
    EXPECT_TRUE(log.ok()) << log.status().message();
    return std::move(log).value();
  }
  std::vector<nlohmann::json> Records() {
    std::vector<nlohmann::json> out;
    std::istringstream in(ReadAllText(dir_.path() + "/audit.log"));
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line);
      if (j["event"] == "enroll_refused") out.push_back(j);
    }
    return out;
  }
  static std::string ReadAllText(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  testing::TempDir dir_;
};

TEST_F(RefusalFixture, TheFirstRefusalIsRecordedAtOnceAndTheRestAsOneCount) {
  auto log = Open();
  {
    RefusalLog refusals(log.get(), std::chrono::milliseconds(300));
    for (int i = 0; i < 50; ++i) {
      refusals.Refused("unknown token", "10.0.0.1", "dev-" + std::to_string(i), "t1");
    }
    refusals.Refused("unknown token", "10.0.0.2", "dev-x", "t1");
    refusals.Refused("token expired", "10.0.0.1", "dev-y", "t2");
    EXPECT_EQ(Records().size(), 3u) << "one per (reason, peer) so far";
    ASSERT_TRUE(testing::WaitForTrue([&] { return Records().size() == 4; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    EXPECT_EQ(Records().size(), 4u);
    // A refusal after the interval starts over with a record of its own.
    refusals.Refused("unknown token", "10.0.0.1", "dev-z", "t1");
    refusals.Refused("unknown token", "10.0.0.1", "dev-z", "t1");
    EXPECT_EQ(Records().size(), 5u);
  }  // the destructor records the pending count
  const auto r = Records();
  ASSERT_EQ(r.size(), 6u);
  EXPECT_EQ(r[0]["count"], 1);
  EXPECT_EQ(r[0]["actor"], "dev-0");
  EXPECT_EQ(r[0]["peer"], "10.0.0.1");
  EXPECT_EQ(r[3]["count"], 49);
  EXPECT_EQ(r[3]["reason"], "unknown token");
  EXPECT_EQ(r[3]["device_ids"].size(), 5u) << "the first few only";
  EXPECT_EQ(r[3]["token_ids"], nlohmann::json::array({"t1"}));
  EXPECT_EQ(r[5]["count"], 1);
}

TEST_F(RefusalFixture, ManyPeersAreFoldedIntoOne) {
  auto log = Open();
  RefusalLog refusals(log.get(), std::chrono::seconds(60), /*max_pairs=*/4);
  for (int i = 0; i < 100; ++i)
    refusals.Refused("unknown token", "10.0.1." + std::to_string(i), "d");
  refusals.Flush();
  const auto r = Records();
  EXPECT_EQ(r.size(), 6u);  // 4 peers, the first of the rest, and the count of the other 95
  EXPECT_EQ(r[4]["peer"], "*");
  EXPECT_EQ(r[5]["peer"], "*");
  EXPECT_EQ(r[5]["count"], 95);
}

}  // namespace
}  // namespace fleet
