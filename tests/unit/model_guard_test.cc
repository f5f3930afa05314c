// Signed tasks (crypto/model_signature.h, client/model_guard.h): the signature covers the exact
// bytes of the whole task and is checked before they are parsed; the newest accepted round per
// job survives a restart of the device.
#include "client/model_guard.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "coordinator/task_envelope.h"
#include "crypto/model_signature.h"
#include "crypto/random.h"
#include "test_util.h"

namespace fleet {
namespace {

using testing::TempDir;

v1::Task MakeTask(const std::string& job, uint32_t round, uint32_t epoch = 0) {
  v1::Task t;
  t.set_kind(v1::Task::TRAIN);
  t.set_job_id(job);
  t.set_round(round);
  t.set_resume_epoch(epoch);
  t.set_dataset("uci-har");
  t.mutable_model()->set_type("mlp");
  t.mutable_model()->set_task("classification");
  t.mutable_model()->set_input_dim(561);
  t.mutable_model()->set_output_dim(6);
  t.mutable_model()->set_activation("relu");
  t.mutable_train()->set_learning_rate(0.05f);
  t.mutable_train()->set_local_epochs(1);
  t.mutable_secagg()->set_clip(1.0f);
  t.mutable_secagg()->set_min_survivors(3);
  t.set_parameters(std::string(64, 'p'));
  return t;
}

v1::SignedTask Seal(const crypto::SigningKey& key, const v1::Task& task) {
  v1::SignedTask s;
  s.set_task(task.SerializeAsString());
  s.set_signature(crypto::SignTask(key, s.task()));
  return s;
}

// The envelope with `task`'s bytes in place of the signed ones, under the original signature.
v1::SignedTask Swap(v1::SignedTask s, const v1::Task& task) {
  s.set_task(task.SerializeAsString());
  return s;
}

class SignedTaskTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(crypto::Init()); }
  crypto::SigningKey key_ = crypto::SigningKey::Generate();
};

TEST_F(SignedTaskTest, SignedMessageIsADomainTagAndTheBlake2bOfTheExactBytes) {
  const std::string m = crypto::TaskSignatureMessage("abc");
  ASSERT_EQ(m.size(), 23u + 32u);
  EXPECT_EQ(m.substr(0, 23), std::string("fleetfl signed task v1\0", 23));
  EXPECT_NE(crypto::TaskSignatureMessage("abc "), m);
  const std::string sig = crypto::SignTask(key_, "abc");
  EXPECT_EQ(sig.size(), 64u);
  EXPECT_TRUE(crypto::VerifyTask(key_.public_key(), "abc", sig));
  EXPECT_FALSE(crypto::VerifyTask(key_.public_key(), "abd", sig));
  // A signature over the same bytes for another purpose (no domain tag) does not verify.
  EXPECT_FALSE(crypto::VerifyTask(key_.public_key(), "abc", key_.Sign("abc")));
}

TEST_F(SignedTaskTest, AcceptsTheSignedTaskAndReturnsWhatWasSigned) {
  ModelGuard guard(key_.public_key());
  const v1::Task task = MakeTask("job-a", 1);
  StatusOr<v1::Task> got = guard.Accept(Seal(key_, task));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->SerializeAsString(), task.SerializeAsString());
}

// The coordinator writes the envelope in one buffer; it is exactly the SignedTask encoding.
TEST_F(SignedTaskTest, CoordinatorEnvelopeIsTheSignedTaskEncodingAndVerifies) {
  v1::Task task = MakeTask("job-a", 7);
  task.set_parameters(std::string(300000, 'w'));  // a multi-byte length prefix
  const std::string sealed = SealTask(task, &key_);
  v1::SignedTask parsed;
  ASSERT_TRUE(parsed.ParseFromString(sealed));
  EXPECT_EQ(parsed.task(), task.SerializeAsString());
  EXPECT_EQ(parsed.SerializeAsString(), sealed);
  ModelGuard guard(key_.public_key());
  StatusOr<v1::Task> got = guard.Accept(parsed);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->parameters(), task.parameters());

  // Without a PKI (--insecure) the envelope carries no signature, and a device refuses it.
  v1::SignedTask unsigned_task;
  ASSERT_TRUE(unsigned_task.ParseFromString(SealTask(task, nullptr)));
  EXPECT_TRUE(unsigned_task.signature().empty());
  EXPECT_EQ(unsigned_task.task(), task.SerializeAsString());
  EXPECT_NE(guard.Accept(unsigned_task).status().message().find("not signed"), std::string::npos);
}

// Fuzz finding (tests/fuzz/corpus/signed_task): for a task whose fields are all defaults the
// envelope carried an empty task field that the SignedTask encoding leaves out.
TEST_F(SignedTaskTest, EnvelopeOfAnEmptyTaskIsTheSignedTaskEncodingToo) {
  const v1::Task empty;
  v1::SignedTask expected;
  expected.set_signature(crypto::SignTask(key_, ""));
  EXPECT_EQ(SealTask(empty, &key_), expected.SerializeAsString());
  EXPECT_EQ(SealTask(empty, nullptr), v1::SignedTask().SerializeAsString());
}

// Every field a device acts on is covered, not only job, round and parameters.
TEST_F(SignedTaskTest, TamperingWithAnyFieldIsRefusedNamingTheSignature) {
  ModelGuard guard(key_.public_key());
  const v1::Task task = MakeTask("job-a", 2);
  const v1::SignedTask sealed = Seal(key_, task);
  std::vector<std::pair<std::string, std::function<void(v1::Task*)>>> edits = {
      {"activation", [](v1::Task* t) { t->mutable_model()->set_activation("tanh"); }},
      {"model task", [](v1::Task* t) { t->mutable_model()->set_task("regression"); }},
      {"hidden", [](v1::Task* t) { t->mutable_model()->add_hidden(8); }},
      {"learning rate", [](v1::Task* t) { t->mutable_train()->set_learning_rate(10); }},
      {"local epochs", [](v1::Task* t) { t->mutable_train()->set_local_epochs(1000); }},
      {"secagg clip", [](v1::Task* t) { t->mutable_secagg()->set_clip(1e9f); }},
      {"secagg min survivors", [](v1::Task* t) { t->mutable_secagg()->set_min_survivors(1); }},
      {"secagg removed", [](v1::Task* t) { t->clear_secagg(); }},
      {"dataset", [](v1::Task* t) { t->set_dataset("other"); }},
      {"seed", [](v1::Task* t) { t->set_seed(7); }},
      {"kind", [](v1::Task* t) { t->set_kind(v1::Task::EVALUATE); }},
      {"epoch", [](v1::Task* t) { t->set_resume_epoch(9); }},
      {"parameters", [](v1::Task* t) { t->mutable_parameters()->back() ^= 1; }},
  };
  for (const auto& [what, edit] : edits) {
    v1::Task changed = task;
    edit(&changed);
    Status s = guard.Accept(Swap(sealed, changed)).status();
    EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << what;
    EXPECT_NE(s.message().find("signature does not verify"), std::string::npos)
        << what << ": " << s.message();
  }
  // Refusals recorded nothing: the original is still accepted.
  EXPECT_TRUE(guard.Accept(sealed).ok());
}

TEST_F(SignedTaskTest, WrongKeyTruncatedExtendedAndAnotherJobsSignatureAreRefused) {
  ModelGuard guard(key_.public_key());
  const v1::SignedTask sealed = Seal(key_, MakeTask("job-a", 3));

  crypto::SigningKey stranger = crypto::SigningKey::Generate();
  EXPECT_EQ(guard.Accept(Seal(stranger, MakeTask("job-a", 3))).status().code(),
            StatusCode::kPermissionDenied);

  v1::SignedTask cut = sealed;
  cut.mutable_task()->pop_back();
  EXPECT_EQ(guard.Accept(cut).status().code(), StatusCode::kPermissionDenied);
  v1::SignedTask short_sig = sealed;
  short_sig.mutable_signature()->pop_back();
  EXPECT_EQ(guard.Accept(short_sig).status().code(), StatusCode::kPermissionDenied);
  // Every truncation of the envelope as it travels either does not parse or is refused.
  const std::string wire = sealed.SerializeAsString();
  for (size_t n = 0; n < wire.size(); ++n) {
    v1::SignedTask partial;
    if (!partial.ParseFromString(wire.substr(0, n))) continue;
    EXPECT_FALSE(guard.Check(partial).ok()) << "prefix of " << n << " bytes";
  }

  v1::SignedTask longer = sealed;
  longer.mutable_task()->push_back('\0');
  EXPECT_EQ(guard.Accept(longer).status().code(), StatusCode::kPermissionDenied);
  // A field appended to the envelope (unknown to it) is refused, signature or not.
  v1::SignedTask extra;
  ASSERT_TRUE(extra.ParseFromString(wire + std::string("\x1a\x01x", 3)));
  Status e = guard.Accept(extra).status();
  EXPECT_EQ(e.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(e.message().find("fields other than"), std::string::npos) << e.message();
  // A second task field appended on the wire replaces the signed bytes: refused.
  v1::SignedTask replaced;
  const std::string other = MakeTask("job-a", 99).SerializeAsString();
  v1::SignedTask only_task;
  only_task.set_task(other);
  ASSERT_TRUE(replaced.ParseFromString(wire + only_task.SerializeAsString()));
  EXPECT_EQ(guard.Accept(replaced).status().code(), StatusCode::kPermissionDenied);

  // Another job's signature on this job's bytes, and this job's bytes under another job's
  // envelope, do not verify; another job's own signed task is a task for that job only.
  const v1::SignedTask job_b = Seal(key_, MakeTask("job-b", 3));
  v1::SignedTask mixed = sealed;
  mixed.set_signature(job_b.signature());
  EXPECT_EQ(guard.Accept(mixed).status().code(), StatusCode::kPermissionDenied);
  StatusOr<v1::Task> b = guard.Accept(job_b);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->job_id(), "job-b");

  v1::SignedTask unsigned_task = sealed;
  unsigned_task.clear_signature();
  EXPECT_NE(guard.Accept(unsigned_task).status().message().find("not signed"), std::string::npos);
  v1::SignedTask not_a_task;
  not_a_task.set_task("\xff\xff\xff");
  not_a_task.set_signature(crypto::SignTask(key_, not_a_task.task()));
  EXPECT_EQ(guard.Accept(not_a_task).status().code(), StatusCode::kInvalidArgument);
  // Nothing refused was recorded.
  EXPECT_TRUE(guard.Accept(sealed).ok());
}

TEST_F(SignedTaskTest, ClaimedIdentityIsOnlyTheIdsOfTheUnverifiedBytes) {
  v1::Task t = MakeTask("job-a", 4);
  v1::SignedTask s;
  s.set_task(t.SerializeAsString());
  v1::Task claimed = ClaimedIdentity(s);
  EXPECT_EQ(claimed.job_id(), "job-a");
  EXPECT_EQ(claimed.round(), 4u);
  EXPECT_EQ(claimed.kind(), v1::Task::TRAIN);
  EXPECT_FALSE(claimed.has_model());
  EXPECT_TRUE(claimed.parameters().empty());
}

// Rounds are ordered by (resume_epoch, round); equal marks are accepted (TRAIN and EVALUATE of
// a round, a retried round, the round a restarted coordinator replays).
TEST_F(SignedTaskTest, RollbackIsRefusedAfterARestartOfTheDevice) {
  TempDir dir;
  const std::string path = dir.path() + "/accepted-rounds";
  {
    auto file = AcceptedRoundsFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status().ToString();
    ModelGuard guard(key_.public_key(), file->get());
    ASSERT_TRUE(guard.Accept(Seal(key_, MakeTask("job-a", 4))).ok());
    ASSERT_TRUE(guard.Accept(Seal(key_, MakeTask("job-a", 5))).ok());
    ASSERT_TRUE(guard.Accept(Seal(key_, MakeTask("job-b", 1))).ok());
  }
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // The device restarts: a new guard over the same file.
  auto file = AcceptedRoundsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  ModelGuard guard(key_.public_key(), file->get());
  Status old = guard.Accept(Seal(key_, MakeTask("job-a", 4))).status();
  EXPECT_EQ(old.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(old.message().find("older than round 5"), std::string::npos) << old.message();
  EXPECT_NE(old.message().find("rollback"), std::string::npos) << old.message();
  // Check() applies the same rule (the kept control model goes through it).
  EXPECT_FALSE(guard.Check(Seal(key_, MakeTask("job-a", 4))).ok());

  v1::Task evaluate = MakeTask("job-a", 5);
  evaluate.set_kind(v1::Task::EVALUATE);
  evaluate.set_parameters("the model after round 5");
  EXPECT_TRUE(guard.Accept(Seal(key_, evaluate)).ok()) << "same round, another model";
  // A coordinator that resumed from round 2's checkpoint (epoch 1) replays round 3.
  EXPECT_TRUE(guard.Accept(Seal(key_, MakeTask("job-a", 3, 1))).ok());
  EXPECT_FALSE(guard.Accept(Seal(key_, MakeTask("job-a", 6, 0))).ok()) << "older epoch";
  EXPECT_TRUE(guard.Accept(Seal(key_, MakeTask("job-b", 1))).ok());

  // Check() records nothing; Accept() does, durably.
  ASSERT_TRUE(guard.Check(Seal(key_, MakeTask("job-c", 9))).ok());
  EXPECT_EQ(file->get()->Newest("job-c"), nullptr);
  auto reopened = AcceptedRoundsFile::Open(path);
  ASSERT_TRUE(reopened.ok());
  const TaskMark* a = (*reopened)->Newest("job-a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->resume_epoch, 1u);
  EXPECT_EQ(a->round, 3u);
}

TEST_F(SignedTaskTest, DamagedFileIsAnErrorNamingItAndAFailedWriteRecordsNothing) {
  TempDir dir;
  const std::string path = dir.Write("accepted-rounds", "\xff\xff garbage");
  auto damaged = AcceptedRoundsFile::Open(path);
  ASSERT_FALSE(damaged.ok());
  EXPECT_EQ(damaged.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(damaged.status().message().find(path), std::string::npos);

  auto file = AcceptedRoundsFile::Open(dir.path() + "/no-such-dir/accepted-rounds");
  ASSERT_TRUE(file.ok());
  ModelGuard guard(key_.public_key(), file->get());
  Status s = guard.Accept(Seal(key_, MakeTask("job-a", 2))).status();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cannot record the accepted round of job job-a"), std::string::npos)
      << s.message();
  EXPECT_EQ(file->get()->Newest("job-a"), nullptr);
}

}  // namespace
}  // namespace fleet
