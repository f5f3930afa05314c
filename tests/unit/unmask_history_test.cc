// The device's record of the secure sums it helped reveal (client/unmask_history.h) on real
// files: durable and 0600, read back after a restart, bounded, and a damaged file is an error
// naming it (never read as "nothing revealed").
#include "client/unmask_history.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "common/file_util.h"
#include "test_util.h"

namespace fleet {
namespace {

std::string Hash(int i) { return ModelVersionHash("model-" + std::to_string(i)); }

TEST(UnmaskHistory, ModelVersionHashIsBlake2b256OfTheParameters) {
  // RFC 7693 / libsodium test vector for the empty input, unkeyed, 32-byte output.
  EXPECT_EQ(ModelVersionHash(""),
            "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
  EXPECT_NE(ModelVersionHash("a"), ModelVersionHash("b"));
}

TEST(UnmaskHistory, RecordIsDurablePrivateAndSurvivesReload) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/" + UnmaskHistory::kFileName;
  auto h = UnmaskHistory::Load(path);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->size(), 0u);
  EXPECT_FALSE(FileExists(path));
  ASSERT_TRUE(h->Record("job-1", Hash(1), 3, 1700000000000).ok());
  ASSERT_TRUE(h->Record("job-1", Hash(1), 3, 1700000000001).ok());  // the same pair once
  ASSERT_TRUE(h->Record("job-2", Hash(2), 1, 1700000000002).ok());
  EXPECT_TRUE(h->Contains("job-1", Hash(1)));
  EXPECT_FALSE(h->Contains("job-1", Hash(2)));  // another model of the job
  EXPECT_FALSE(h->Contains("job-3", Hash(1)));  // the same bytes in another job ...
  EXPECT_EQ(h->JobThatRevealed(Hash(1)), std::optional<std::string>("job-1"));  // ... still count
  EXPECT_EQ(h->JobThatRevealed(Hash(2)), std::optional<std::string>("job-2"));
  EXPECT_EQ(h->JobThatRevealed(Hash(3)), std::nullopt);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto again = UnmaskHistory::Load(path);  // a restarted device
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->size(), 2u);
  EXPECT_TRUE(again->Contains("job-1", Hash(1)));
  EXPECT_TRUE(again->Contains("job-2", Hash(2)));
}

TEST(UnmaskHistory, DamagedFileIsAnErrorNamingTheFileAndLine) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/" + UnmaskHistory::kFileName;
  {
    auto h = UnmaskHistory::Load(path);
    ASSERT_TRUE(h.ok());
    ASSERT_TRUE(h->Record("job-1", Hash(1), 3, 5).ok());
  }
  const std::string good = *ReadFile(path);
  const std::string header = good.substr(0, good.find('\n') + 1);
  struct Case {
    std::string contents;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"", ":1: truncated"},
      {good.substr(0, good.size() - 1), ":1: truncated"},
      {"something else\n", ":1: not an unmask record"},
      {header + "job-1 " + Hash(1) + " 3\n", ":2: expected 4 fields"},
      {header + "job-1 " + Hash(1) + " 3 5 extra\n", ":2: expected 4 fields"},
      {header + "job-1 " + Hash(1).substr(1) + " 3 5\n", ":2: model hash"},
      {header + "job-1 " + std::string(64, 'G') + " 3 5\n", ":2: model hash"},
      {header + "job/1 " + Hash(1) + " 3 5\n", ":2: malformed job id"},
      {header + "job-1 " + Hash(1) + " -3 5\n", ":2: malformed round"},
      {header + "job-1 " + Hash(1) + " 99999999999 5\n", ":2: malformed round"},
      {header + "job-1 " + Hash(1) + " 3 x\n", ":2: malformed time"},
  };
  for (const Case& c : cases) {
    ASSERT_TRUE(WriteFileAtomically(path, c.contents, 0600).ok());
    auto h = UnmaskHistory::Load(path);
    ASSERT_FALSE(h.ok()) << c.contents;
    EXPECT_EQ(h.status().code(), StatusCode::kDataLoss);
    EXPECT_NE(h.status().message().find(path + c.expect), std::string::npos)
        << h.status().message();
    EXPECT_NE(h.status().message().find("refuses secure aggregation"), std::string::npos);
    EXPECT_EQ(*ReadFile(path), c.contents);  // left as it was, for inspection
  }
  // A record that cannot be read at all (a directory where the file should be).
  testing::TempDir other;
  const std::string unreadable = other.path() + "/" + UnmaskHistory::kFileName;
  ASSERT_EQ(::mkdir(unreadable.c_str(), 0700), 0);
  auto h = UnmaskHistory::Load(unreadable);
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find(unreadable), std::string::npos) << h.status().message();
}

// A record that cannot be made durable changes nothing: the caller must not send its shares.
TEST(UnmaskHistory, FailedWriteLeavesTheRecordUnchanged) {
  testing::TempDir dir;
  auto h = UnmaskHistory::Load(dir.path() + "/missing-dir/" + UnmaskHistory::kFileName);
  ASSERT_TRUE(h.ok());
  Status s = h->Record("job-1", Hash(1), 1, 1);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("missing-dir"), std::string::npos) << s.message();
  EXPECT_FALSE(h->Contains("job-1", Hash(1)));
  EXPECT_FALSE(h->Record("job 1", Hash(1), 1, 1).ok());  // would break the line format
  EXPECT_FALSE(h->Record("job-1", "abc", 1, 1).ok());
}

// Bounded: the newest kPerJob models per job, and the kMaxJobs jobs seen most recently.
TEST(UnmaskHistory, KeepsTheNewestModelsPerJobAndTheNewestJobs) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/" + UnmaskHistory::kFileName;
  auto h = UnmaskHistory::Load(path);
  ASSERT_TRUE(h.ok());
  const int per_job = static_cast<int>(UnmaskHistory::kPerJob);
  for (int i = 0; i < per_job + 5; ++i) {
    ASSERT_TRUE(h->Record("job-a", Hash(i), static_cast<uint32_t>(i + 1), i).ok());
  }
  EXPECT_EQ(h->size(), UnmaskHistory::kPerJob);
  EXPECT_FALSE(h->Contains("job-a", Hash(4)));
  EXPECT_TRUE(h->Contains("job-a", Hash(5)));
  EXPECT_TRUE(h->Contains("job-a", Hash(per_job + 4)));
  const int jobs = static_cast<int>(UnmaskHistory::kMaxJobs);
  for (int j = 0; j < jobs; ++j) {
    ASSERT_TRUE(h->Record("job-" + std::to_string(j), Hash(1000 + j), 1, 1000 + j).ok());
  }
  // job-a was the least recently seen job: it went; the kMaxJobs newer ones stay.
  EXPECT_FALSE(h->Contains("job-a", Hash(per_job + 4)));
  EXPECT_TRUE(h->Contains("job-0", Hash(1000)));
  EXPECT_EQ(h->size(), UnmaskHistory::kMaxJobs);
  auto again = UnmaskHistory::Load(path);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->size(), UnmaskHistory::kMaxJobs);
}

}  // namespace
}  // namespace fleet
