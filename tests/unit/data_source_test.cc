// Data sources on real files (UCI Occupancy, UCI HAR labels) and on malformed ones.
#include "client/data_source.h"

#include <gtest/gtest.h>

#include "client/client_config.h"
#include "test_util.h"

namespace fleet {
namespace {

const std::string kShared = std::string(FLEET_SOURCE_DIR) + "/../shared/data";

DatasetSpec OneFile(DataFileSpec f) {
  DatasetSpec s;
  s.name = "t";
  s.files.push_back(std::move(f));
  return s;
}

TEST(DataSource, LoadsUciOccupancyCsvWithRowNameColumn) {
  DataFileSpec f;
  f.path = kShared + "/uci-occupancy-detection/datatraining.txt";
  f.header = true;
  f.features = {"Temperature", "Humidity", "Light", "CO2", "HumidityRatio"};
  f.label = "Occupancy";
  auto ds = LoadDataset(OneFile(f));
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_EQ(ds->rows, 8143u);  // documented size of the training file
  EXPECT_EQ(ds->cols, 5u);
  // First data row: "1","2015-02-04 17:51:00",23.18,27.272,426,721.25,0.00479298817650529,1
  EXPECT_FLOAT_EQ(ds->features[0], 23.18f);
  EXPECT_FLOAT_EQ(ds->features[3], 721.25f);
  EXPECT_FLOAT_EQ(ds->labels[0], 1.0f);
}

TEST(DataSource, ConcatenatesFilesRowWise) {
  DataFileSpec a;
  a.path = kShared + "/uci-occupancy-detection/datatest.txt";
  a.header = true;
  a.features = {"Temperature", "CO2"};
  a.label = "Occupancy";
  DataFileSpec b = a;
  b.path = kShared + "/uci-occupancy-detection/datatest2.txt";
  DatasetSpec s = OneFile(a);
  s.files.push_back(b);
  auto ds = LoadDataset(s);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_EQ(ds->rows, 2665u + 9752u);
}

TEST(DataSource, WhitespaceWithSubjectFilterAndLabelOffset) {
  testing::TempDir dir;
  std::string p = dir.Write("w.txt", "1 5  0.5 -1e-001\n2 1 1.0 2.0\n1 6 3 4\n\n");
  DataFileSpec f;
  f.path = p;
  f.csv = false;
  f.subject = "0";
  f.label = "1";
  f.features_rest = true;
  DatasetSpec s = OneFile(f);
  s.subjects = {1};
  s.label_offset = -1;
  auto ds = LoadDataset(s);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  ASSERT_EQ(ds->rows, 2u);
  EXPECT_EQ(ds->cols, 2u);
  EXPECT_FLOAT_EQ(ds->features[1], -0.1f);
  EXPECT_FLOAT_EQ(ds->labels[0], 4.0f);
  EXPECT_FLOAT_EQ(ds->labels[1], 5.0f);
  EXPECT_EQ(ds->subjects, (std::vector<int64_t>{1, 1}));
}

TEST(DataSource, NonNumericFieldNamesFileLineAndColumn) {
  testing::TempDir dir;
  std::string p = dir.Write("bad.csv", "a,b,y\n1,2,0\n3,oops,1\n");
  DataFileSpec f;
  f.path = p;
  f.header = true;
  f.features = {"a", "b"};
  f.label = "y";
  auto ds = LoadDataset(OneFile(f));
  ASSERT_FALSE(ds.ok());
  EXPECT_NE(ds.status().message().find(p + ":3: column 'b': 'oops' is not a finite number"),
            std::string::npos)
      << ds.status().message();
}

TEST(DataSource, WrongColumnCountNamesLine) {
  testing::TempDir dir;
  std::string p = dir.Write("short.csv", "1,2,0\n3,4,1\n5,1\n");
  DataFileSpec f;
  f.path = p;
  f.features = {"0", "1"};
  f.label = "2";
  auto ds = LoadDataset(OneFile(f));
  ASSERT_FALSE(ds.ok());
  EXPECT_NE(ds.status().message().find(p + ":3: expected 3 fields, found 2"), std::string::npos)
      << ds.status().message();
}

TEST(DataSource, SkipPolicyDropsBadRowsOnly) {
  testing::TempDir dir;
  std::string p = dir.Write("mixed.csv", "1,2,0\nNA,4,1\n5,6\n7,8,1\n");
  DataFileSpec f;
  f.path = p;
  f.features = {"0", "1"};
  f.label = "2";
  DatasetSpec s = OneFile(f);
  s.skip_bad_rows = true;
  auto ds = LoadDataset(s);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_EQ(ds->rows, 2u);
  EXPECT_FLOAT_EQ(ds->features[2], 7.0f);
}

TEST(DataSource, UnknownColumnAndMissingFileAreClear) {
  DataFileSpec f;
  f.path = kShared + "/uci-occupancy-detection/datatest.txt";
  f.header = true;
  f.features = {"Temperature", "Pressure"};
  f.label = "Occupancy";
  auto ds = LoadDataset(OneFile(f));
  ASSERT_FALSE(ds.ok());
  EXPECT_NE(ds.status().message().find("no column named 'Pressure'"), std::string::npos);
  f.path = "/nonexistent/x.csv";
  ds = LoadDataset(OneFile(f));
  ASSERT_FALSE(ds.ok());
  EXPECT_NE(ds.status().message().find("/nonexistent/x.csv"), std::string::npos);
}

TEST(DataSource, NoRowsForSubjectIsAnError) {
  testing::TempDir dir;
  DataFileSpec f;
  f.path = dir.Write("w.txt", "1 1 0.5\n");
  f.csv = false;
  f.subject = "0";
  f.label = "1";
  f.features_rest = true;
  DatasetSpec s = OneFile(f);
  s.subjects = {9};
  auto ds = LoadDataset(s);
  ASSERT_FALSE(ds.ok());
  EXPECT_NE(ds.status().message().find("no rows"), std::string::npos);
}

TEST(DataSource, ValidationSplitIsDeterministicAndComplete) {
  Dataset all;
  all.cols = 1;
  for (int i = 0; i < 100; ++i) {
    all.features.push_back(static_cast<float>(i));
    all.labels.push_back(static_cast<float>(i % 2));
    all.rows++;
  }
  Dataset t1, v1, t2, v2;
  SplitValidation(all, 0.2, 5, &t1, &v1);
  SplitValidation(all, 0.2, 5, &t2, &v2);
  EXPECT_EQ(v1.rows, 20u);
  EXPECT_EQ(t1.rows, 80u);
  EXPECT_EQ(v1.features, v2.features);
  std::vector<float> merged = t1.features;
  merged.insert(merged.end(), v1.features.begin(), v1.features.end());
  std::sort(merged.begin(), merged.end());
  EXPECT_EQ(merged, all.features);
}

// Fuzz findings (tests/fuzz/corpus/csv, config): values the old loader cast to integers or floats
// they do not fit (undefined behaviour), rounded through a float, or threw on.
TEST(DataSource, SubjectsMustBeExactIntegersBelowTwoToThe53) {
  testing::TempDir dir;
  DataFileSpec f;
  f.path = dir.Write("s.csv", "16777217,1,0\n3,2,1\n");  // 2^24 + 1: no float holds it
  f.features = {"1"};
  f.label = "2";
  f.subject = "0";
  auto ds = LoadDataset(OneFile(f));
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_EQ(ds->subjects, (std::vector<int64_t>{16777217, 3}));
  for (const char* huge : {"1e30", "9007199254740993", "-1e300", "nan"}) {
    f.path = dir.Write("h.csv", std::string(huge) + ",1,0\n");
    auto bad = LoadDataset(OneFile(f));
    ASSERT_FALSE(bad.ok()) << huge;
    EXPECT_NE(bad.status().message().find(f.path + ":1: subject column 0 is not an integer"),
              std::string::npos)
        << bad.status().message();
  }
}

TEST(DataSource, HugeColumnIndexIsAnErrorNotAnException) {
  testing::TempDir dir;
  DataFileSpec f;
  f.path = dir.Write("c.csv", "1,2,0\n");
  f.features = {"99999999999999999999999"};
  f.label = "2";
  auto ds = LoadDataset(OneFile(f));
  ASSERT_FALSE(ds.ok());
  EXPECT_NE(ds.status().message().find("column index 99999999999999999999999 is out of range"),
            std::string::npos)
      << ds.status().message();
}

TEST(DataSource, ValuesBeyondTheFloatRangeAfterNormalizationOrOffsetAreErrors) {
  testing::TempDir dir;
  DataFileSpec f;
  f.path = dir.Write("n.csv", "3e38,0\n1,1\n");
  f.features = {"0"};
  f.label = "1";
  DatasetSpec s = OneFile(f);
  s.normalize_mean = {0};
  s.normalize_std = {0.5};  // 3e38 / 0.5 is no float
  auto ds = LoadDataset(s);
  ASSERT_FALSE(ds.ok());
  EXPECT_NE(ds.status().message().find("feature 0 of row 1 is beyond the float range once "
                                       "normalized"),
            std::string::npos)
      << ds.status().message();
  s = OneFile(f);
  s.label_offset = 1e300;
  ds = LoadDataset(s);
  ASSERT_FALSE(ds.ok());
  EXPECT_NE(ds.status().message().find(":1: label plus label_offset is beyond the float range"),
            std::string::npos)
      << ds.status().message();
}

TEST(DataSource, HugeSubjectInTheConfigIsAnErrorNotAnException) {
  testing::TempDir dir;
  const std::string p = dir.Write("client.yaml",
                                  "device_id: d\ndatasets:\n  - name: x\n"
                                  "    subjects: [1, 99999999999999999999]\n"
                                  "    files: [{path: a.csv, features: rest, label: '0'}]\n");
  auto c = LoadClientConfig(p);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("subjects': expected list of non-negative integers"),
            std::string::npos)
      << c.status().message();
}

}  // namespace
}  // namespace fleet
