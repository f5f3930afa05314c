// Job specs and client configs: the shipped examples load; bad input names file, line and key.
#include <gtest/gtest.h>

#include "client/client_config.h"
#include "common/config.h"
#include "common/job_spec.h"
#include "test_util.h"

namespace fleet {
namespace {

const char* kValidJob = R"(name: t
dataset: d
model: {input_dim: 4, hidden: [8], output_dim: 3}
rounds: 2
max_round_retries: 3
target_clients: 3
)";

TEST(JobSpec, ShippedHarSpecLoads) {
  auto spec = LoadJobSpecFile(std::string(FLEET_SOURCE_DIR) + "/configs/jobs/har-mlp.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->model().input_dim(), 561u);
  EXPECT_EQ(spec->model().output_dim(), 6u);
  EXPECT_EQ(spec->train().optimizer(), "adam");
  EXPECT_EQ(spec->target_clients(), 16u);
}

TEST(JobSpec, ShippedOccupancySpecLoads) {
  auto spec = LoadJobSpecFile(std::string(FLEET_SOURCE_DIR) + "/configs/jobs/occupancy-mlp.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->model().input_dim(), 2u);
  EXPECT_EQ(spec->target_clients(), 7u);
}

TEST(ClientConfig, NormalizeIsAppliedAtLoadAndChecked) {
  testing::TempDir dir;
  dir.Write("d.csv", "a,b,y\n1,10,0\n3,30,1\n");
  auto c = LoadClientConfig(dir.Write("n.yaml", R"(device_id: d
datasets:
  - name: x
    normalize: {mean: [2, 20], std: [1, 10]}
    files: [{path: d.csv, format: csv, header: true, features: [a, b], label: y}]
)"));
  ASSERT_TRUE(c.ok()) << c.status().message();
  auto d = LoadDataset(c->datasets[0]);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->features, (std::vector<float>{-1, -1, 1, 1}));
  c = LoadClientConfig(dir.Write("bad.yaml", R"(device_id: d
datasets:
  - name: x
    normalize: {mean: [2, 20], std: [1, 0]}
    files: [{path: d.csv, format: csv, header: true, features: [a, b], label: y}]
)"));
  EXPECT_NE(c.status().message().find("std must be > 0"), std::string::npos);
  c = LoadClientConfig(dir.Write("len.yaml", R"(device_id: d
datasets:
  - name: x
    normalize: {mean: [2], std: [1]}
    files: [{path: d.csv, format: csv, header: true, features: [a, b], label: y}]
)"));
  ASSERT_TRUE(c.ok());
  EXPECT_NE(LoadDataset(c->datasets[0]).status().message().find("normalize has 1 entries for 2"),
            std::string::npos);
}

TEST(JobSpec, DefaultsApplied) {
  auto spec = ParseJobSpecYaml(kValidJob, "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->model().activation(), "relu");
  EXPECT_EQ(spec->strategy().name(), "fedavg");
  EXPECT_EQ(spec->train().optimizer(), "sgd");
  EXPECT_EQ(spec->train().local_epochs(), 1u);
  EXPECT_EQ(spec->round_deadline_s(), 60u);
  // Secure aggregation is on unless a spec says otherwise, with the documented defaults.
  EXPECT_EQ(spec->min_clients(), 3u);
  const auto& sa = spec->secure_aggregation();
  EXPECT_FALSE(sa.disabled());
  EXPECT_FLOAT_EQ(sa.corrupt_fraction(), 0.05f);
  EXPECT_FLOAT_EQ(sa.dropout_fraction(), 0.05f);
  EXPECT_EQ(sa.value_bits(), 16u);
  EXPECT_EQ(sa.max_weight(), 1000u);
  // An unset proto field means secure too (specs submitted over the API).
  EXPECT_FALSE(v1::SecureAggregationSpec().disabled());
}

TEST(JobSpec, RepeatedKeysAndBadSelectionAreRefused) {
  auto dup = ParseJobSpecYaml(std::string(kValidJob) + "rounds: 5\n", "job.yaml");
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("job.yaml:7: key 'rounds' appears more than once"),
            std::string::npos)
      << dup.status().message();
  const std::string plain = std::string(kValidJob) + "secure_aggregation: {enabled: false}\n";
  for (const auto& [yaml, error] : std::vector<std::pair<std::string, std::string>>{
           {"selection: {fraction: 1.5}\n", "selection.fraction must be in [0, 1]"},
           {"selection: {over_selection: -1}\n", "selection.over_selection"},
           {"selection: {min_battery_percent: 101}\n", "min_battery_percent must be <= 100"},
           {"selection: {max_clients: 1}\n", "selection.max_clients (1) must be >= min_clients"},
           {"selection: {labels: [a, b]}\n", "selection.labels"},
           {"selection: {colour: red}\n", "colour"}}) {
    auto bad = ParseJobSpecYaml(plain + yaml, "job.yaml");
    ASSERT_FALSE(bad.ok()) << yaml;
    EXPECT_NE(bad.status().message().find(error), std::string::npos) << bad.status().message();
  }
  auto good = ParseJobSpecYaml(
      plain + "selection: {labels: {site: ward-3}, require_power: true, over_selection: 0.5, "
              "cooldown_rounds: 2}\n",
      "job.yaml");
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  EXPECT_EQ(good->selection().labels().at("site"), "ward-3");
  EXPECT_TRUE(good->selection().require_power());
  EXPECT_EQ(good->selection().cooldown_rounds(), 2u);
  // Under secure aggregation a fraction needs a cap: the largest round fixes the modulus.
  auto secure = ParseJobSpecYaml(std::string(kValidJob) + "selection: {fraction: 0.5}\n", "j.yaml");
  ASSERT_FALSE(secure.ok());
  EXPECT_NE(secure.status().message().find("needs selection.max_clients"), std::string::npos);
}

TEST(JobSpec, SecureAggregationOptOutAndInsecureSettingsRefused) {
  auto off = ParseJobSpecYaml(std::string(kValidJob) + "secure_aggregation: {enabled: false}\n",
                              "job.yaml");
  ASSERT_TRUE(off.ok()) << off.status().ToString();
  EXPECT_TRUE(off->secure_aggregation().disabled());
  auto two = ParseJobSpecYaml(std::string(kValidJob) + "min_clients: 2\n", "job.yaml");
  ASSERT_FALSE(two.ok());
  EXPECT_NE(two.status().message().find("min_clients >= 3"), std::string::npos);
  two = ParseJobSpecYaml(std::string(kValidJob) + "min_clients: 2\nsecure_aggregation: {enabled: false}\n", "job.yaml");
  EXPECT_TRUE(two.ok());
  two = ParseJobSpecYaml(std::string(kValidJob) + "min_clients: 2\n", "job.yaml");
  ASSERT_FALSE(two.ok());
  EXPECT_NE(two.status().message().find("min_clients >= 3"), std::string::npos);
  std::string ten = kValidJob;
  ten.replace(ten.find("target_clients: 3"), 17, "target_clients: 10");
  auto low_t = ParseJobSpecYaml(ten + "secure_aggregation: {corrupt_fraction: 0.3, neighbours: 10, "
                                      "threshold: 3}\n",
                                "job.yaml");
  ASSERT_FALSE(low_t.ok());
  EXPECT_NE(low_t.status().message().find("insecure"), std::string::npos)
      << low_t.status().message();
  auto typo = ParseJobSpecYaml(std::string(kValidJob) + "secure_aggregation: {enable: true}\n",
                               "job.yaml");
  ASSERT_FALSE(typo.ok());
  EXPECT_NE(typo.status().message().find("secure_aggregation.enable"), std::string::npos)
      << typo.status().message();
}

TEST(JobSpec, UnknownKeyNamesFileLineAndKey) {
  std::string text = std::string(kValidJob) + "train:\n  epochs: 3\n";
  auto spec = ParseJobSpecYaml(text, "job.yaml");
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("job.yaml:8"), std::string::npos)
      << spec.status().message();
  EXPECT_NE(spec.status().message().find("unknown key 'train.epochs'"), std::string::npos);
  EXPECT_NE(spec.status().message().find("local_epochs"), std::string::npos);  // lists known keys
}

TEST(JobSpec, WrongTypeNamesExpectedType) {
  std::string text = kValidJob;
  text.replace(text.find("rounds: 2"), 9, "rounds: many");
  auto spec = ParseJobSpecYaml(text, "job.yaml");
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("key 'rounds': expected unsigned integer, got 'many'"),
            std::string::npos)
      << spec.status().message();
}

TEST(JobSpec, NegativeNumberIsNotUnsigned) {
  std::string text = kValidJob;
  text.replace(text.find("rounds: 2"), 9, "rounds: -2");
  EXPECT_FALSE(ParseJobSpecYaml(text, "job.yaml").ok());
}

TEST(JobSpec, MissingRequiredKey) {
  auto spec = ParseJobSpecYaml("name: t\ndataset: d\nrounds: 1\n", "job.yaml");
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("missing required key 'model'"), std::string::npos);
}

TEST(JobSpec, SemanticErrors) {
  struct Case {
    std::string from, to, expect;
  };
  for (const Case& c : std::vector<Case>{
           {"target_clients: 3", "target_clients: 1", "target_clients (1) must be >= min_clients"},
           {"output_dim: 3", "output_dim: 0", "output_dim must be > 0"},
           {"rounds: 2", "rounds: 0", "rounds must be in"},
           {"dataset: d", "dataset: d\nstrategy: {name: median}", "strategy.name 'median' needs every"},
           {"dataset: d", "dataset: d\ntrain: {optimizer: lbfgs}", "optimizer 'lbfgs'"},
           {"dataset: d", "dataset: d\ntrain: {learning_rate: 0}", "learning_rate"},
       }) {
    std::string text = kValidJob;
    text.replace(text.find(c.from), c.from.size(), c.to);
    auto spec = ParseJobSpecYaml(text, "job.yaml");
    ASSERT_FALSE(spec.ok()) << c.to;
    EXPECT_NE(spec.status().message().find(c.expect), std::string::npos)
        << spec.status().message();
  }
}

// Fuzz findings (tests/fuzz/corpus/job_spec): a name that is not UTF-8 parsed, and then the
// coordinator could not parse the JobSpec fleetctl sent (protobuf strings are UTF-8); a float
// setting beyond float's range was converted anyway (undefined behaviour).
TEST(JobSpec, StringsMustBeUtf8AndFloatsWithinTheFloatRange) {
  for (const std::string& edit : {std::string("name: \"t\xff\""), std::string("name: t\xc3")}) {
    std::string text = kValidJob;
    text.replace(text.find("name: t"), 7, edit);
    auto spec = ParseJobSpecYaml(text, "job.yaml");
    ASSERT_FALSE(spec.ok());
    EXPECT_NE(spec.status().message().find("job.yaml:1: key 'name': not valid UTF-8"),
              std::string::npos)
        << spec.status().message();
  }
  std::string text = std::string(kValidJob) + "selection: {labels: {site: \"w\xe9\"}}\n";
  EXPECT_NE(ParseJobSpecYaml(text, "job.yaml").status().message().find("not valid UTF-8"),
            std::string::npos);
  text = std::string(kValidJob) + "train: {learning_rate: 1e300}\n";
  auto spec = ParseJobSpecYaml(text, "job.yaml");
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find(
                "key 'train.learning_rate': expected number within the float range"),
            std::string::npos)
      << spec.status().message();
}

TEST(JobSpec, SequenceAndAutoencoderModels) {
  const std::string head = "name: t\ndataset: d\nrounds: 2\ntarget_clients: 3\n";
  auto cnn = ParseJobSpecYaml(head + "model: {type: cnn1d, input_dim: 16, channels: 2, "
                                     "kernel_size: 3, hidden: [8], output_dim: 2}\n", "j.yaml");
  ASSERT_TRUE(cnn.ok()) << cnn.status().message();
  EXPECT_EQ(cnn->model().channels(), 2u);
  EXPECT_EQ(cnn->model().kernel_size(), 3u);
  auto no_channels = ParseJobSpecYaml(
      head + "model: {type: cnn1d, input_dim: 16, hidden: [8], output_dim: 2}\n", "j.yaml");
  ASSERT_FALSE(no_channels.ok());
  EXPECT_NE(no_channels.status().message().find("channels"), std::string::npos);
  auto mlp_channels = ParseJobSpecYaml(
      head + "model: {input_dim: 16, channels: 2, hidden: [8], output_dim: 2}\n", "j.yaml");
  ASSERT_FALSE(mlp_channels.ok());
  EXPECT_NE(mlp_channels.status().message().find("model.channels"), std::string::npos)
      << mlp_channels.status().message();
  auto ae = ParseJobSpecYaml(
      head + "model: {task: autoencoder, input_dim: 4, hidden: [2], output_dim: 4}\n", "j.yaml");
  ASSERT_TRUE(ae.ok()) << ae.status().message();
  auto bad_ae = ParseJobSpecYaml(
      head + "model: {task: autoencoder, input_dim: 4, hidden: [2], output_dim: 3}\n", "j.yaml");
  ASSERT_FALSE(bad_ae.ok());
  EXPECT_NE(bad_ae.status().message().find("equal input_dim"), std::string::npos)
      << bad_ae.status().message();
}

TEST(JobSpec, InvalidYamlReportsLine) {
  auto spec = ParseJobSpecYaml("name: t\nmodel: [unclosed\n", "bad.yaml");
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("bad.yaml:"), std::string::npos);
  EXPECT_NE(spec.status().message().find("invalid YAML"), std::string::npos);
}

TEST(ClientConfig, ShippedExamplesLoad) {
  for (const char* name : {"har-subject.yaml", "occupancy.yaml"}) {
    auto c = LoadClientConfig(std::string(FLEET_SOURCE_DIR) + "/configs/clients/" + name);
    ASSERT_TRUE(c.ok()) << name << ": " << c.status().ToString();
    ASSERT_EQ(c->datasets.size(), 1u);
  }
}

TEST(ClientConfig, LabelsAndEligibilitySourcesAreChecked) {
  testing::TempDir dir;
  auto ok = LoadClientConfig(dir.Write("ok.yaml", "device_id: d\nlabels: {site: ward-3}\n"
                                                  "eligibility: {idle_max_load: 0.5, "
                                                  "power_supply_dir: /tmp/ps}\n"));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->labels.at("site"), "ward-3");
  EXPECT_DOUBLE_EQ(ok->eligibility.idle_max_load, 0.5);
  EXPECT_EQ(ok->eligibility.power_supply_dir, "/tmp/ps");
  for (const auto& [yaml, error] : std::vector<std::pair<std::string, std::string>>{
           {"labels: [a, b]\n", "key 'labels'"},
           {"eligibility: {idle_max_load: 0}\n", "idle_max_load"},
           {"eligibility: {idle_max_load: busy}\n", "idle_max_load"},
           {"eligibility: {sysfs: /x}\n", "sysfs"}}) {
    auto bad = LoadClientConfig(dir.Write("bad.yaml", "device_id: d\n" + yaml));
    ASSERT_FALSE(bad.ok()) << yaml;
    EXPECT_NE(bad.status().message().find(error), std::string::npos) << bad.status().message();
  }
}

TEST(ClientConfig, PlainRoundsAreRefusedUnlessAllowedExplicitly) {
  testing::TempDir dir;
  auto def = LoadClientConfig(dir.Write("def.yaml", "device_id: d\n"));
  ASSERT_TRUE(def.ok()) << def.status().ToString();
  EXPECT_FALSE(def->allow_plain_rounds);
  for (const char* name : {"har-subject.yaml", "occupancy.yaml"}) {  // the shipped examples too
    auto c = LoadClientConfig(std::string(FLEET_SOURCE_DIR) + "/configs/clients/" + name);
    ASSERT_TRUE(c.ok()) << name << ": " << c.status().ToString();
    EXPECT_FALSE(c->allow_plain_rounds) << name;
  }
  auto on = LoadClientConfig(dir.Write("on.yaml", "device_id: d\nallow_plain_rounds: true\n"));
  ASSERT_TRUE(on.ok()) << on.status().ToString();
  EXPECT_TRUE(on->allow_plain_rounds);
  auto bad = LoadClientConfig(dir.Write("bad.yaml", "device_id: d\nallow_plain_rounds: maybe\n"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("allow_plain_rounds"), std::string::npos)
      << bad.status().message();
}

TEST(ClientConfig, RejectsUnknownNestedKey) {
  testing::TempDir dir;
  std::string path = dir.Write("c.yaml", R"(device_id: d1
datasets:
  - name: x
    files:
      - path: a.csv
        features: rest
        label: y
        colour: blue
)");
  auto c = LoadClientConfig(path);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("unknown key 'datasets[0].files[0].colour'"),
            std::string::npos)
      << c.status().message();
}

// The packaged unit and the container run `fleet-client --state-dir DIR` with a config that
// names none (and lives on a read-only /etc): the sample buffer must default into DIR.
TEST(ClientConfig, StateDirFlagIsWhereTheSampleBufferDefaultsTo) {
  testing::TempDir dir;
  const std::string path = dir.Write("c.yaml", R"(datasets: []
control:
  model_dataset: d
  outputs: [a, b]
  replay: {path: r.csv}
  schema: {fields: [{name: x}]}
  default_action: {topic: t, command: {status: none}}
)");
  dir.Write("r.csv", "x\n1\n");
  auto c = LoadClientConfig(path, "/var/lib/fleetfl-client");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->state_dir, "/var/lib/fleetfl-client");
  ASSERT_TRUE(c->control && c->control->buffer);
  EXPECT_EQ(c->control->buffer->path, "/var/lib/fleetfl-client/samples.db");
  // Without the flag: the config file's directory, as before.
  auto plain = LoadClientConfig(path);
  ASSERT_TRUE(plain.ok()) << plain.status().message();
  EXPECT_EQ(plain->control->buffer->path, dir.path() + "/samples.db");
}

TEST(ClientConfig, RejectsBadRoleAndBadDeviceIdAndDefaultsIdToHostname) {
  testing::TempDir dir;
  // No device_id and no datasets: the packaged config, valid on any machine before its sensors
  // are configured; the id is the hostname.
  auto c = LoadClientConfig(dir.Write("a.yaml", "datasets: []\n"));
  ASSERT_TRUE(c.ok()) << c.status().message();
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  EXPECT_EQ(c->device_id, host);
  EXPECT_TRUE(c->datasets.empty());
  c = LoadClientConfig(dir.Write("id.yaml", "device_id: 'has spaces'\n"));
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("device_id"), std::string::npos);
  EXPECT_NE(c.status().message().find("letters, digits"), std::string::npos);
  c = LoadClientConfig(dir.Write("b.yaml", R"(device_id: d
datasets:
  - name: x
    role: teach
    files: [{path: a, features: rest, label: 0}]
)"));
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("expected 'train' or 'evaluate'"), std::string::npos);
}

}  // namespace
}  // namespace fleet

namespace fleet {
namespace {

TEST(Duration, SuffixesParseAndBadTextIsNamed) {
  EXPECT_EQ(*ParseDurationSeconds("90s"), 90);
  EXPECT_EQ(*ParseDurationSeconds("15m"), 900);
  EXPECT_EQ(*ParseDurationSeconds("24h"), 86400);
  EXPECT_EQ(*ParseDurationSeconds("7d"), 7 * 86400);
  EXPECT_EQ(*ParseDurationSeconds("3600"), 3600);
  for (const char* bad : {"", "h", "abc", "5x", "-1h", "1.5h", "10hh", "9999999999999d"}) {
    auto r = ParseDurationSeconds(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(std::string("'") + bad + "'"), std::string::npos)
        << r.status().message();
  }
  EXPECT_NE(ParseDurationSeconds("0s").status().message().find("must be positive"),
            std::string::npos);
}

// Fuzz finding (tests/fuzz/corpus/rules): 999999999999d is 8.6e16 s, and the rules' ms of it
// overflowed an int64. Durations stop at 100 years.
TEST(Duration, AtMostOneHundredYears) {
  EXPECT_EQ(*ParseDurationSeconds("36525d"), kMaxDurationSeconds);
  EXPECT_EQ(*ParseDurationSeconds("3155760000"), kMaxDurationSeconds);
  for (const char* long_ago : {"36526d", "876601h", "999999999999d", "3155760001"}) {
    auto r = ParseDurationSeconds(long_ago);
    ASSERT_FALSE(r.ok()) << long_ago;
    EXPECT_NE(r.status().message().find("longer than 100 years"), std::string::npos)
        << r.status().message();
  }
}

TEST(Utf8, WellFormedOnly) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("ward 3 \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));  // é € 😀
  for (const char* bad : {"\xff", "a\xc3", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80",
                          "\xf4\x90\x80\x80", "\x80", "\xc3\x28"}) {
    EXPECT_FALSE(IsValidUtf8(bad)) << bad;
  }
}

TEST(Utf8Prefix, NeverCutsInsideASequence) {
  EXPECT_EQ(Utf8Prefix("short", 128), "short");
  EXPECT_EQ(Utf8Prefix("abcdef", 3), "abc");
  const std::string e_acute = "\xc3\xa9";          // 2 bytes
  EXPECT_EQ(Utf8Prefix("ab" + e_acute, 3), "ab");  // the cut falls inside it
  EXPECT_EQ(Utf8Prefix("ab" + e_acute, 4), "ab" + e_acute);
  EXPECT_EQ(Utf8Prefix("\xf0\x9f\x98\x80x", 2), "");  // inside a 4-byte sequence
  const std::string id = std::string(127, 'a') + e_acute;
  EXPECT_TRUE(IsValidUtf8(Utf8Prefix(id, 128)));
  EXPECT_EQ(Utf8Prefix(id, 128).size(), 127u);
}

}  // namespace
}  // namespace fleet
