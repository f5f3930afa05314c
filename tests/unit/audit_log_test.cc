// The audit log against an attacker who can write the file but not read the key, and against
// crashes (issue 16, item 5): MACs over the chain, the head recorded outside the file, the
// carry-forward of records from before the key, failed appends, and the coordinator's trail
// (key file, database head, audit-reset) on a real SQLite store.
#include "common/audit_log.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sodium.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <vector>

#include "common/file_util.h"
#include "coordinator/audit_trail.h"
#include "coordinator/authority.h"
#include "coordinator/registrar.h"
#include "coordinator/store.h"
#include "test_util.h"

namespace fleet {
namespace {

std::vector<std::string> Lines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

void WriteLines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream out(path, std::ios::trunc);
  for (const auto& l : lines) out << l << "\n";
}

// The unkeyed chain hash, as anyone can compute it without the key.
std::string ChainHash(const std::string& prev, const nlohmann::json& record) {
  nlohmann::json j = record;
  j.erase("hash");
  j.erase("mac");
  const std::string input = prev + "\n" + j.dump();
  unsigned char h[32];
  crypto_generichash(h, sizeof h, reinterpret_cast<const unsigned char*>(input.data()),
                     input.size(), nullptr, 0);
  char hex[65];
  sodium_bin2hex(hex, sizeof hex, h, sizeof h);
  return hex;
}

// What an attacker without the key does: edit a record and recompute every unkeyed hash from
// there on so the chain links again. MACs stay as they were (or are dropped with drop_macs).
std::vector<std::string> RewriteChain(std::vector<std::string> lines, size_t index,
                                      const std::function<void(nlohmann::json*)>& edit,
                                      bool drop_macs = false) {
  std::string prev;
  for (size_t i = 0; i < lines.size(); ++i) {
    nlohmann::json j = nlohmann::json::parse(lines[i]);
    if (i == index) edit(&j);
    if (i >= index) {
      j["prev"] = prev;
      if (drop_macs) j.erase("mac");
      j["hash"] = ChainHash(prev, j);
      lines[i] = j.dump();
    }
    prev = j["hash"].get<std::string>();
  }
  return lines;
}

// A log with its "database": the head recorded after every append.
class LogFixture : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_GE(sodium_init(), 0); }

  AuditLogOptions Options() {
    AuditLogOptions o;
    o.path = path_;
    o.key = key_.Copy();
    o.recorded = recorded_;
    o.record_head = [this](const AuditHead& h) {
      ++head_updates_;
      if (!head_store_ok_) return Internal("database is locked");
      recorded_ = h;
      return OkStatus();
    };
    return o;
  }
  std::unique_ptr<AuditLog> OpenOk() {
    auto log = AuditLog::Open(Options());
    EXPECT_TRUE(log.ok()) << log.status().message();
    return log.ok() ? std::move(log).value() : nullptr;
  }
  void AppendN(int n) {
    auto log = OpenOk();
    ASSERT_NE(log, nullptr);
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(log->Append("round_complete", "coordinator", {{"round", i + 1}}).ok());
    }
  }
  // The head of record `seq` as it is in the file.
  AuditHead HeadAt(uint64_t seq) {
    auto v = VerifyAuditLog(path_, &key_, seq);
    EXPECT_TRUE(v.ok());
    return v->remembered;
  }

  testing::TempDir dir_;
  const std::string path_ = dir_.path() + "/audit.log";
  AuditKey key_ = AuditKey::Generate();
  std::optional<AuditHead> recorded_;
  int head_updates_ = 0;
  bool head_store_ok_ = true;
};

TEST_F(LogFixture, EveryRecordCarriesAMacThatOnlyTheKeyVerifies) {
  AppendN(5);
  EXPECT_EQ(head_updates_, 5) << "the head is recorded after every append";
  ASSERT_TRUE(recorded_.has_value());
  EXPECT_EQ(recorded_->seq, 5u);
  for (const auto& line : Lines(path_)) {
    auto j = nlohmann::json::parse(line);
    ASSERT_TRUE(j.contains("mac")) << line;
    EXPECT_EQ(j["mac"].get<std::string>().size(), 64u);
  }
  auto v = VerifyAuditLog(path_, &key_);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok) << v->reason;
  EXPECT_EQ(v->macs_checked, 5u);
  EXPECT_EQ(v->head, *recorded_);

  const AuditKey other = AuditKey::Generate();
  auto wrong = VerifyAuditLog(path_, &other);
  ASSERT_TRUE(wrong.ok());
  EXPECT_FALSE(wrong->ok);
  EXPECT_EQ(wrong->broken_line, 1u);
  EXPECT_NE(wrong->reason.find("MAC does not verify"), std::string::npos) << wrong->reason;
}

TEST_F(LogFixture, ARewrittenRecordWithRecomputedHashesIsCaughtByItsMac) {
  AppendN(5);
  auto forged = RewriteChain(Lines(path_), 2, [](nlohmann::json* j) { (*j)["round"] = 99; });
  WriteLines(path_, forged);
  // The unkeyed chain links again: this is what the old verifier accepted.
  auto unkeyed = VerifyAuditLog(path_);
  ASSERT_TRUE(unkeyed.ok());
  EXPECT_TRUE(unkeyed->ok);
  // The MAC of the edited record does not.
  auto v = VerifyAuditLog(path_, &key_);
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->ok);
  EXPECT_EQ(v->broken_line, 3u);
  EXPECT_NE(v->reason.find("MAC does not verify"), std::string::npos) << v->reason;
  auto log = AuditLog::Open(Options());
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(log.status().message().find("broken at line 3"), std::string::npos)
      << log.status().message();
}

// Without the key, an editor can still change how a record is written without changing what
// it parses to: a duplicate key (which readers resolve differently), key order, whitespace.
TEST_F(LogFixture, ALineNotInTheFormTheLogWritesIsAnEdit) {
  AppendN(3);
  const auto original = Lines(path_);
  auto line = original[1];
  const std::string event = "\"event\":\"round_complete\"";
  ASSERT_NE(line.find(event), std::string::npos) << line;
  for (const std::string& edited : {line.substr(0, line.find(event)) + "\"event\":\"job_stop\"," +
                                        line.substr(line.find(event)),
                                    line.substr(0, 1) + " " + line.substr(1)}) {
    auto lines = original;
    lines[1] = edited;
    WriteLines(path_, lines);
    // It parses to the same record (the parser keeps the last duplicate), so the hash and MAC
    // still match: only the form gives it away.
    EXPECT_EQ(nlohmann::json::parse(edited), nlohmann::json::parse(line));
    auto v = VerifyAuditLog(path_, &key_);
    ASSERT_TRUE(v.ok());
    EXPECT_FALSE(v->ok) << edited;
    EXPECT_EQ(v->broken_line, 2u);
    EXPECT_NE(v->reason.find("not in the form the log writes"), std::string::npos) << v->reason;
  }
  WriteLines(path_, original);
  auto v = VerifyAuditLog(path_, &key_);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok) << v->reason;
}

// Another party's text cut by bytes can be invalid UTF-8: it is recorded (as U+FFFD), not thrown
// out of the process.
TEST_F(LogFixture, InvalidUtf8InAFieldIsRecordedNotThrown) {
  auto log = OpenOk();
  ASSERT_NE(log, nullptr);
  const std::string cut = std::string(127, 'a') + "\xc3";  // half of an e-acute
  ASSERT_TRUE(log->Append("enroll_refused", "unauthenticated", {{"device_id", cut}}).ok());
  ASSERT_TRUE(log->Append("round_complete", "coordinator", {{"round", 1}}).ok());
  auto v = VerifyAuditLog(path_, &key_);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok) << v->reason;
  EXPECT_EQ(v->head.seq, 2u);
  const auto lines = Lines(path_);
  EXPECT_EQ(nlohmann::json::parse(lines[0])["device_id"].get<std::string>(),
            std::string(127, 'a') + "\xef\xbf\xbd");
}

TEST_F(LogFixture, RemovedMacsAreNoticed) {
  AppendN(5);
  const auto original = Lines(path_);
  // MACs stripped from the first records (the chain still links: the MAC is not hashed).
  auto lines = original;
  for (size_t i = 0; i < 3; ++i) {
    auto j = nlohmann::json::parse(lines[i]);
    j.erase("mac");
    lines[i] = j.dump();
  }
  WriteLines(path_, lines);
  auto v = VerifyAuditLog(path_);
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->ok);
  EXPECT_EQ(v->broken_line, 4u);
  EXPECT_NE(v->reason.find("MACs were removed"), std::string::npos) << v->reason;

  // Every MAC stripped and every record rewritten: no MAC left to fail, but the head recorded
  // outside the file carries one.
  auto all = RewriteChain(
      original, 0, [](nlohmann::json* j) { (*j)["actor"] = "nobody"; },
      /*drop_macs=*/true);
  WriteLines(path_, all);
  auto chain_only = VerifyAuditLog(path_, &key_, 5);
  ASSERT_TRUE(chain_only.ok());
  EXPECT_TRUE(chain_only->ok);
  EXPECT_EQ(chain_only->keyed, 0u);
  EXPECT_EQ(CompareAuditHead(*chain_only, *recorded_).match, AuditHeadMatch::kDiverged);
  EXPECT_FALSE(AuditLog::Open(Options()).ok());
}

TEST_F(LogFixture, TruncationAgainstTheRecordedHeadIsRefused) {
  AppendN(5);
  auto lines = Lines(path_);
  lines.resize(3);
  WriteLines(path_, lines);
  // What is left is a valid, MACed chain: only the recorded head shows records are missing.
  auto v = VerifyAuditLog(path_, &key_, recorded_->seq);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok);
  AuditHeadComparison c = CompareAuditHead(*v, *recorded_);
  EXPECT_EQ(c.match, AuditHeadMatch::kTruncated);
  EXPECT_NE(c.explanation.find("records 4..5 were removed"), std::string::npos) << c.explanation;

  const std::string size_before = ReadFile(path_).value();
  auto log = AuditLog::Open(Options());
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(log.status().message().find("records 4..5 were removed"), std::string::npos)
      << log.status().message();
  EXPECT_EQ(ReadFile(path_).value(), size_before) << "a refused log is left as it was";

  // An empty (or deleted) file is the same truncation.
  WriteLines(path_, {});
  EXPECT_FALSE(AuditLog::Open(Options()).ok());
}

TEST_F(LogFixture, OneRecordAheadIsACrashAndIsRepaired) {
  AppendN(5);
  recorded_ = HeadAt(4);  // the crash came between writing record 5 and recording it
  auto log = OpenOk();
  ASSERT_NE(log, nullptr);
  EXPECT_NE(log->repaired().find("not yet in the state database"), std::string::npos)
      << log->repaired();
  EXPECT_EQ(recorded_->seq, 5u) << "the head is recorded now";
  EXPECT_TRUE(log->Append("job_stop", "alice").ok());
  EXPECT_EQ(recorded_->seq, 6u);
}

TEST_F(LogFixture, SeveralRecordsAheadMeansTheDatabaseWasRolledBack) {
  AppendN(5);
  recorded_ = HeadAt(2);
  auto log = AuditLog::Open(Options());
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.status().message().find("rolled back"), std::string::npos)
      << log.status().message();
}

TEST_F(LogFixture, ARecordedHeadTheFileDoesNotContainMeansARewrite) {
  AppendN(5);
  AuditHead other = *recorded_;
  other.hash = std::string(64, 'a');
  recorded_ = other;
  auto log = AuditLog::Open(Options());
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.status().message().find("rewritten or replaced"), std::string::npos)
      << log.status().message();
}

TEST_F(LogFixture, MacedRecordsWithoutARecordedHeadAreRefused) {
  AppendN(3);
  recorded_.reset();  // a database that was replaced or reset
  auto log = AuditLog::Open(Options());
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.status().message().find("records no audit head"), std::string::npos)
      << log.status().message();
}

TEST_F(LogFixture, AnIncompleteLastLineIsCutOffOnlyWhenTheRecordedHeadProvesItWasNeverDone) {
  AppendN(3);
  const std::string intact = ReadFile(path_).value();
  std::ofstream(path_, std::ios::app) << R"({"seq":4,"event":"tok)";
  {
    auto log = OpenOk();
    ASSERT_NE(log, nullptr);
    EXPECT_NE(log->repaired().find("incomplete last line"), std::string::npos);
  }
  EXPECT_EQ(ReadFile(path_).value(), intact);

  // With the recorded head one behind the intact records, the torn line is not explained.
  std::ofstream(path_, std::ios::app) << R"({"seq":4,"event":"tok)";
  recorded_ = HeadAt(2);
  auto log = AuditLog::Open(Options());
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.status().message().find("incomplete last record"), std::string::npos)
      << log.status().message();
}

TEST_F(LogFixture, RecordsFromBeforeTheKeyAreCarriedForwardAndPinned) {
  // Three records as the unkeyed version wrote them.
  std::vector<std::string> legacy;
  std::string prev;
  for (int i = 1; i <= 3; ++i) {
    nlohmann::json j = {{"seq", i},
                        {"time_ms", 1000 + i},
                        {"event", "token_create"},
                        {"actor", "admin"},
                        {"token_id", "t" + std::to_string(i)},
                        {"prev", prev}};
    j["hash"] = ChainHash(prev, j);
    prev = j["hash"];
    legacy.push_back(j.dump());
  }
  WriteLines(path_, legacy);
  {
    auto log = OpenOk();  // no recorded head: a database from before heads were kept
    ASSERT_NE(log, nullptr);
    EXPECT_EQ(log->head().seq, 4u);
  }
  auto lines = Lines(path_);
  ASSERT_EQ(lines.size(), 4u);
  auto keyed = nlohmann::json::parse(lines[3]);
  EXPECT_EQ(keyed["event"], "audit_keyed");
  EXPECT_EQ(keyed["unkeyed_records"], 3);
  EXPECT_EQ(keyed["unkeyed_head"], prev);
  auto v = VerifyAuditLog(path_, &key_);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok) << v->reason;
  EXPECT_EQ(v->keyed, 1u);
  EXPECT_EQ(v->macs_checked, 1u);
  EXPECT_EQ(recorded_->seq, 4u);
  // The old records still verify as before, and rewriting them consistently breaks the MAC of
  // the record that pins them.
  auto forged = RewriteChain(lines, 1, [](nlohmann::json* j) { (*j)["token_id"] = "evil"; });
  WriteLines(path_, forged);
  auto bad = VerifyAuditLog(path_, &key_);
  ASSERT_TRUE(bad.ok());
  EXPECT_FALSE(bad->ok);
  EXPECT_EQ(bad->broken_line, 4u);
  EXPECT_NE(bad->reason.find("MAC"), std::string::npos) << bad->reason;
}

// The downgrade: someone who can write the log and the database (not the key) rewrites the
// whole chain without MACs, with recomputed unkeyed hashes, and records that head without a
// MAC. Once the log has been opened with its key that is refused, not pinned as history.
TEST_F(LogFixture, AChainRewrittenWithoutMacsIsRefusedOnceTheLogWasKeyed) {
  AppendN(3);
  const AuditHead keyed_head = *recorded_;
  auto forged = RewriteChain(
      Lines(path_), 0, [](nlohmann::json* j) { (*j)["actor"] = "nobody"; }, /*drop_macs=*/true);
  WriteLines(path_, forged);
  auto v = VerifyAuditLog(path_);
  ASSERT_TRUE(v.ok());
  ASSERT_TRUE(v->ok) << "the unkeyed chain links: " << v->reason;
  AuditHead forged_head = v->head;
  forged_head.mac.clear();

  // With the forged head "in the database" and the log known to be keyed: refused.
  recorded_ = forged_head;
  AuditLogOptions o = Options();
  o.allow_unkeyed_history = false;
  auto refused = AuditLog::Open(std::move(o));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("rewritten without MACs"), std::string::npos)
      << refused.status().message();
  // Without any recorded head as well.
  recorded_.reset();
  o = Options();
  o.allow_unkeyed_history = false;
  EXPECT_FALSE(AuditLog::Open(std::move(o)).ok());

  // A head recorded without its MAC for a record that carries one: the database was edited.
  std::remove(path_.c_str());
  recorded_.reset();
  AppendN(3);
  AuditHead stripped = *recorded_;
  stripped.mac.clear();
  recorded_ = stripped;
  auto edited = AuditLog::Open(Options());
  ASSERT_FALSE(edited.ok());
  EXPECT_NE(edited.status().message().find("without its MAC"), std::string::npos)
      << edited.status().message();
  (void)keyed_head;
}

TEST_F(LogFixture, AFailedAppendLeavesNoPartialRecordAndStopsTheLog) {
  AppendN(3);
  const std::string before = ReadFile(path_).value();
  auto log = OpenOk();
  ASSERT_NE(log, nullptr);
  // A real write error: the file may grow by 20 bytes only (SIGXFSZ ignored: write gets EFBIG
  // after a short write).
  struct rlimit old {};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = before.size() + 20;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  Status s = log->Append("enroll", "dev-1", {{"serial", "abc"}});
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, old_handler);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cannot append to the audit log"), std::string::npos) << s.message();
  EXPECT_EQ(ReadFile(path_).value(), before) << "the partial record was cut off";
  EXPECT_EQ(recorded_->seq, 3u);
  // A log that lost a write takes no more records until it is re-verified.
  EXPECT_FALSE(log->Ready().ok());
  Status later = log->Append("job_stop", "alice");
  EXPECT_FALSE(later.ok());
  EXPECT_NE(later.message().find("restart"), std::string::npos) << later.message();
  EXPECT_EQ(ReadFile(path_).value(), before);
  log.reset();
  auto reopened = OpenOk();
  ASSERT_NE(reopened, nullptr);
  EXPECT_TRUE(reopened->Ready().ok());
  EXPECT_TRUE(reopened->Append("job_stop", "alice").ok());
}

TEST_F(LogFixture, TheFileIsNeverTwoRecordsAheadOfTheRecordedHead) {
  AppendN(2);
  auto log = OpenOk();
  ASSERT_NE(log, nullptr);
  head_store_ok_ = false;
  // The record is durable; its head is not recorded, so the next append retries that first.
  EXPECT_TRUE(log->Append("job_submit", "alice").ok());
  EXPECT_EQ(recorded_->seq, 2u);
  Status s = log->Append("job_stop", "alice");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cannot record the audit head"), std::string::npos) << s.message();
  EXPECT_EQ(Lines(path_).size(), 3u) << "nothing written while the database is behind";
  head_store_ok_ = true;
  EXPECT_TRUE(log->Append("job_stop", "alice").ok());
  EXPECT_EQ(recorded_->seq, 4u);
}

TEST(AuditKey, AMissingOrMalformedKeyFileIsAClearError) {
  testing::TempDir dir;
  auto missing = LoadAuditKey(dir.path() + "/audit.key");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(dir.path() + "/audit.key"), std::string::npos);
  auto short_key = LoadAuditKey(dir.Write("short.key", "0123456789"));
  ASSERT_FALSE(short_key.ok());
  EXPECT_EQ(short_key.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(short_key.status().message().find("not 10"), std::string::npos);

  ASSERT_TRUE(CreateAuditKey(dir.path() + "/audit.key").ok());
  struct stat st {};
  ASSERT_EQ(stat((dir.path() + "/audit.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, 32);
  const std::string first = ReadFile(dir.path() + "/audit.key").value();
  EXPECT_EQ(CreateAuditKey(dir.path() + "/audit.key").code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(ReadFile(dir.path() + "/audit.key").value(), first) << "never replaced";
}

// The coordinator's trail on a real SQLite store: key made on first start, head in the
// database, a missing key refused once MACs exist, audit-reset.
TEST(AuditTrail, KeyHeadInTheDatabaseAndReset) {
  testing::TempDir dir;
  const std::string state = dir.path() + "/state";
  ASSERT_TRUE(MakePrivateDir(state).ok());
  const PkiPaths pki(state);
  auto store = OpenSqliteStore(state + "/coordinator.db");
  ASSERT_TRUE(store.ok());
  {
    auto log = OpenAuditTrail(state, store->get());  // no key yet: made now
    ASSERT_TRUE(log.ok()) << log.status().message();
    EXPECT_TRUE(FileExists(pki.audit_key));
    ASSERT_TRUE((*log)->Append("token_create", "admin", {{"token_id", "t1"}}).ok());
    ASSERT_TRUE((*log)->Append("job_submit", "admin", {{"job_id", "j1"}}).ok());
    auto head = (*store)->LoadAuditHead();
    ASSERT_TRUE(head.ok() && head->has_value());
    EXPECT_EQ(**head, (*log)->head());
  }
  // Reopening matches the database's head.
  ASSERT_TRUE(OpenAuditTrail(state, store->get()).ok());

  // The key is gone while the log holds MACs: refused, saying what to do.
  const std::string key_bytes = ReadFile(pki.audit_key).value();
  ASSERT_EQ(std::remove(pki.audit_key.c_str()), 0);
  auto no_key = OpenAuditTrail(state, store->get());
  ASSERT_FALSE(no_key.ok());
  EXPECT_EQ(no_key.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(no_key.status().message().find("audit MAC key " + pki.audit_key + " is missing"),
            std::string::npos)
      << no_key.status().message();
  EXPECT_NE(no_key.status().message().find("restore the key"), std::string::npos);
  EXPECT_FALSE(FileExists(pki.audit_key)) << "no new key replaces the lost one silently";
  ASSERT_TRUE(WriteFileAtomically(pki.audit_key, key_bytes, 0600).ok());

  // Cut the last record: refused, naming audit-reset.
  auto lines = Lines(state + "/audit.log");
  WriteLines(state + "/audit.log", {lines[0]});
  auto cut = OpenAuditTrail(state, store->get());
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.status().message().find("records 2..2 were removed"), std::string::npos)
      << cut.status().message();
  EXPECT_NE(cut.status().message().find("fleet-coordinator audit-reset"), std::string::npos);

  auto reset = ResetAuditTrail(state, store->get(), "disk restored from backup", "operator");
  ASSERT_TRUE(reset.ok()) << reset.status().message();
  EXPECT_NE(reset->find("moved the old log to " + state + "/audit.log.replaced-"),
            std::string::npos)
      << *reset;
  auto log = OpenAuditTrail(state, store->get());
  ASSERT_TRUE(log.ok()) << log.status().message();
  auto fresh = Lines(state + "/audit.log");
  ASSERT_EQ(fresh.size(), 1u);
  auto first = nlohmann::json::parse(fresh[0]);
  EXPECT_EQ(first["event"], "audit_reset");
  EXPECT_EQ(first["seq"], 1);
  EXPECT_EQ(first["reason"], "disk restored from backup");
  EXPECT_EQ(first["recorded_head_seq"], 2);
  EXPECT_EQ(first["replaced_records"], 1);
  EXPECT_NE(first["replaced_state"].get<std::string>().find("records 2..2 were removed"),
            std::string::npos)
      << fresh[0];
  EXPECT_EQ(ResetAuditTrail(state, store->get(), "", "operator").status().code(),
            StatusCode::kInvalidArgument)
      << "a reset goes on record with a reason";
}

// Token revocation fails safe (in force, the admin told it is not on record); token creation
// fails closed (no token exists, no secret is shown). A real write error: RLIMIT_FSIZE.
TEST(FailClosed, TokensThatCannotBeAudited) {
  testing::TempDir dir;
  const std::string state = dir.path() + "/state";
  ASSERT_TRUE(MakePrivateDir(state).ok());
  auto store = OpenSqliteStore(state + "/coordinator.db");
  ASSERT_TRUE(store.ok());
  // RLIMIT_FSIZE limits every file of the process: the log starts larger than the database
  // and its WAL will be (one old 1 MB record), so only appends to the log hit the limit.
  {
    nlohmann::json r = {
        {"seq", 1}, {"event", "padding"}, {"note", std::string(1 << 20, 'p')}, {"prev", ""}};
    r["hash"] = ChainHash("", r);
    WriteLines(state + "/audit.log", {r.dump()});
  }
  auto log = OpenAuditTrail(state, store->get());
  ASSERT_TRUE(log.ok()) << log.status().message();
  // Tokens belong to the registrar, which needs the CA.
  ASSERT_TRUE(InitPki(state, InitOptions(), 1000).ok());
  auto authority = Authority::Load(state);
  ASSERT_TRUE(authority.ok()) << authority.status().message();
  DeviceCertificates certs(store->get());
  RefusalLog refusals(log->get(), std::chrono::seconds(60));
  RegistrarOptions ro;
  ro.now = [] { return int64_t{1000}; };
  auto registrar = LocalRegistrar::Create(authority->get(), store->get(), log->get(), &certs,
                                          &refusals, state + "/pki/token.key", ro);
  ASSERT_TRUE(registrar.ok()) << registrar.status().message();
  LocalRegistrar& access = **registrar;
  auto token = [](const std::string& label) {
    TokenSpec spec;
    spec.ttl_s = 3600;
    spec.uses = 1;
    spec.label = label;
    return spec;
  };
  auto first = access.CreateToken(token("ward-3"), "alice");
  ASSERT_TRUE(first.ok()) << first.status().message();

  struct rlimit old {};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = ReadFile(state + "/audit.log").value().size() + 10;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  auto revoked = access.RevokeToken(first->second.id(), "alice");
  auto second = access.CreateToken(token("ward-4"), "alice");
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, old_handler);

  ASSERT_FALSE(revoked.ok());
  EXPECT_NE(revoked.status().message().find("is revoked (in force now), but the revocation is "
                                            "NOT in the audit log"),
            std::string::npos)
      << revoked.status().message();
  ASSERT_EQ(access.ListTokens()->size(), 1u);
  EXPECT_TRUE((*access.ListTokens())[0].revoked());
  auto stored = (*store)->LoadTokens();
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), 1u);
  EXPECT_TRUE((*stored)[0].info().revoked());

  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("token not created"), std::string::npos)
      << second.status().message();
  EXPECT_EQ(access.ListTokens()->size(), 1u);
  EXPECT_EQ((*store)->LoadTokens()->size(), 1u);
}

}  // namespace
}  // namespace fleet
