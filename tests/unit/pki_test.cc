// The fleet PKI (OpenSSL 3 wrappers), coordinator init, model signatures and the device's model
// guard, the hash-chained audit log, and the certificate renewal schedule.
#include "crypto/pki.h"

#include <gtest/gtest.h>
#include <sodium.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "client/identity.h"
#include "client/model_guard.h"
#include "common/audit_log.h"
#include "common/file_util.h"
#include "coordinator/authority.h"
#include "crypto/model_signature.h"
#include "crypto/random.h"
#include "test_util.h"

namespace fleet {
namespace {

using testing::TempDir;

constexpr int64_t kNow = 1'800'000'000;  // injected clock (2027)

std::string ReadAll(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Ca {
  Ca() {
    key = *crypto::GenerateP256Key();
    cert = *crypto::MakeCaCertificate(key, "test CA", kNow - 10, kNow + 86400);
  }
  std::string Issue(const std::string& subject_key, const std::string& id, crypto::CertRole role,
                    int64_t not_after = kNow + 3600) const {
    crypto::CertRequest r;
    r.public_key_pem = *crypto::PublicKeyOf(subject_key);
    r.common_name = id;
    r.role = role;
    r.not_before = kNow - 300;
    r.not_after = not_after;
    return *crypto::IssueCertificate(cert, key, r);
  }
  std::string key, cert;
};

TEST(Pki, DeviceCertificateCarriesIdentityAndVerifiesOnlyWhileValid) {
  Ca ca;
  std::string key = *crypto::GenerateP256Key();
  std::string cert = ca.Issue(key, "ward3-bed12", crypto::CertRole::kDevice);
  auto info = crypto::ParseCertificate(cert);
  ASSERT_TRUE(info.ok()) << info.status().message();
  EXPECT_EQ(info->role, crypto::CertRole::kDevice);
  EXPECT_EQ(info->id, "ward3-bed12");
  EXPECT_EQ(info->common_name, "ward3-bed12");
  EXPECT_EQ(info->not_before, kNow - 300);
  EXPECT_EQ(info->not_after, kNow + 3600);
  EXPECT_EQ(info->serial.size(), 32u);
  EXPECT_TRUE(crypto::KeyMatchesCertificate(key, cert));
  EXPECT_FALSE(crypto::KeyMatchesCertificate(*crypto::GenerateP256Key(), cert));

  EXPECT_TRUE(crypto::VerifyCertificate(cert, ca.cert, kNow).ok());
  Status expired = crypto::VerifyCertificate(cert, ca.cert, kNow + 3601);
  EXPECT_EQ(expired.code(), StatusCode::kUnauthenticated);
  EXPECT_NE(expired.message().find("expired"), std::string::npos) << expired.message();
  Ca other;
  Status foreign = crypto::VerifyCertificate(cert, other.cert, kNow);
  EXPECT_EQ(foreign.code(), StatusCode::kUnauthenticated) << foreign.message();

  // Two issuances never share a serial.
  EXPECT_NE(crypto::ParseCertificate(ca.Issue(key, "x", crypto::CertRole::kDevice))->serial,
            info->serial);
  auto admin = crypto::ParseCertificate(ca.Issue(key, "alice", crypto::CertRole::kAdmin));
  EXPECT_EQ(admin->role, crypto::CertRole::kAdmin);
  EXPECT_EQ(admin->id, "alice");
}

TEST(Pki, CsrRoundTripsAndTamperingIsRejected) {
  std::string key = *crypto::GenerateP256Key();
  std::string csr = *crypto::MakeCsr(key, "room-101");
  auto info = crypto::ParseCsr(csr);
  ASSERT_TRUE(info.ok()) << info.status().message();
  EXPECT_EQ(info->common_name, "room-101");
  EXPECT_EQ(info->public_key_pem, *crypto::PublicKeyOf(key));

  // Flip one byte inside the base64 body: either unparseable or a bad signature, never OK.
  for (size_t pos : {csr.size() / 2, csr.size() / 3, csr.size() - 60}) {
    std::string bad = csr;
    bad[pos] = bad[pos] == 'A' ? 'B' : 'A';
    auto r = crypto::ParseCsr(bad);
    EXPECT_FALSE(r.ok()) << "byte " << pos;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    }
  }
  for (std::string junk : {std::string(), std::string("hello"),
                           std::string("-----BEGIN CERTIFICATE REQUEST-----\n!!\n"),
                           std::string(100000, 'A')}) {
    auto r = crypto::ParseCsr(junk);
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  }
  EXPECT_FALSE(crypto::ParseCertificate("not a cert").ok());
}

TEST(Pki, SecAggKeyTravelsFromCsrIntoTheCertificate) {
  Ca ca;
  std::string key = *crypto::GenerateP256Key();
  const std::string secagg(crypto::kSecAggKeyBytes, '\x5a');
  auto csr = crypto::ParseCsr(*crypto::MakeCsr(key, "bed-4", secagg));
  ASSERT_TRUE(csr.ok()) << csr.status().message();
  EXPECT_EQ(csr->secagg_public_key, secagg);
  EXPECT_EQ(crypto::ParseCsr(*crypto::MakeCsr(key, "bed-4"))->secagg_public_key, "");

  crypto::CertRequest r;
  r.public_key_pem = csr->public_key_pem;
  r.common_name = "bed-4";
  r.role = crypto::CertRole::kDevice;
  r.not_before = kNow - 300;
  r.not_after = kNow + 3600;
  r.secagg_public_key = csr->secagg_public_key;
  std::string cert = *crypto::IssueCertificate(ca.cert, ca.key, r);
  auto info = crypto::ParseCertificate(cert);
  ASSERT_TRUE(info.ok()) << info.status().message();
  EXPECT_EQ(info->secagg_public_key, secagg);
  // Non-critical: ordinary chain verification (and so TLS) still accepts the certificate.
  EXPECT_TRUE(crypto::VerifyCertificate(cert, ca.cert, kNow).ok());
  EXPECT_EQ(
      crypto::ParseCertificate(ca.Issue(key, "x", crypto::CertRole::kDevice))->secagg_public_key,
      "");

  for (const std::string& bad : {std::string(31, 'a'), std::string(33, 'a')}) {
    EXPECT_EQ(crypto::MakeCsr(key, "bed-4", bad).status().code(), StatusCode::kInvalidArgument);
    r.secagg_public_key = bad;
    auto issued = crypto::IssueCertificate(ca.cert, ca.key, r);
    ASSERT_FALSE(issued.ok());
    EXPECT_NE(issued.status().message().find("32 bytes"), std::string::npos)
        << issued.status().message();
  }
}

// CSRs made by another tool (the openssl CLI) with a malformed key extension: named errors, never
// a silently accepted or truncated key. (The CLI cannot repeat an extension; the CSR fuzzer does.)
TEST(Pki, MalformedSecAggKeyExtensionsInACsrAreRefused) {
  TempDir dir;
  const std::string key = dir.path() + "/k.pem";
  ASSERT_EQ(std::system(("openssl ecparam -name prime256v1 -genkey -noout -out " + key).c_str()),
            0);
  const std::string oid = crypto::kSecAggKeyOid;
  const std::string key32 = "DER:04:20" + [] {
    std::string s;
    for (int i = 0; i < 32; ++i) s += ":aa";
    return s;
  }();
  struct Case {
    std::string addext;  // openssl req -addext arguments
    std::string error;
  };
  for (const Case& c :
       std::vector<Case>{{"-addext " + oid + "=DER:04:03:01:02:03", "holds 3 bytes, expected 32"},
                         {"-addext " + oid + "=DER:02:01:05", "not a DER OCTET STRING"},
                         {"-addext " + oid + "=" + key32 + ":00", "not a DER OCTET STRING"},
                         {"-addext " + oid + "=" + key32, ""}}) {
    const std::string csr = dir.path() + "/r.csr";
    const std::string cmd = "openssl req -new -key " + key + " -subj /CN=bed-4 " + c.addext +
                            " -out " + csr + " 2>/dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    auto r = crypto::ParseCsr(ReadAll(csr));
    if (c.error.empty()) {  // the well-formed control case
      ASSERT_TRUE(r.ok()) << r.status().message();
      EXPECT_EQ(r->secagg_public_key, std::string(32, '\xaa'));
      continue;
    }
    ASSERT_FALSE(r.ok()) << c.addext;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.error), std::string::npos) << r.status().message();
  }
}

TEST(Authority, InitCreatesPrivateFilesOnceAndIssuesDeviceCertificates) {
  TempDir dir;
  ASSERT_TRUE(InitPki(dir.path(), InitOptions(), kNow).ok());
  PkiPaths p(dir.path());
  for (const auto& f : {p.ca_cert, p.ca_key, p.server_cert, p.server_key, p.admin_cert,
                        p.admin_key, p.model_key}) {
    struct stat st {};
    ASSERT_EQ(stat(f.c_str(), &st), 0) << f;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << f;
  }
  std::string ca_before = ReadAll(p.ca_key);
  Status again = InitPki(dir.path(), InitOptions(), kNow);
  EXPECT_EQ(again.code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(ReadAll(p.ca_key), ca_before) << "init must never overwrite the CA";

  EXPECT_TRUE(crypto::VerifyCertificate(ReadAll(p.server_cert), ReadAll(p.ca_cert), kNow).ok());
  EXPECT_EQ(crypto::ParseCertificate(ReadAll(p.admin_cert))->role, crypto::CertRole::kAdmin);

  auto a = Authority::Load(dir.path());
  ASSERT_TRUE(a.ok()) << a.status().message();
  std::string key = *crypto::GenerateP256Key();
  const std::string secagg = crypto::ToString(crypto::SigningKey::Generate().public_key());
  auto csr = crypto::ParseCsr(*crypto::MakeCsr(key, "dev-1", secagg));
  auto cert = (*a)->IssueDeviceCertificate(*csr, "dev-1", kNow, 7 * 86400);
  ASSERT_TRUE(cert.ok()) << cert.status().message();
  auto info = crypto::ParseCertificate(*cert);
  EXPECT_EQ(info->id, "dev-1");
  EXPECT_EQ(info->not_before, kNow - kCertBackdateS) << "backdated for clock skew";
  EXPECT_EQ(info->not_after, kNow + 7 * 86400);
  EXPECT_TRUE(crypto::KeyMatchesCertificate(key, *cert));
  EXPECT_EQ(info->secagg_public_key, secagg) << "the CA certifies the CSR's SecAgg key";
}

// Every device certificate certifies a SecAgg signing key: a CSR that asks for none (a client
// from before certified keys) or for a point that is not a usable Ed25519 key is refused.
TEST(Authority, DeviceCsrWithoutAValidSecAggKeyIsRefused) {
  TempDir dir;
  ASSERT_TRUE(InitPki(dir.path(), InitOptions(), kNow).ok());
  auto a = Authority::Load(dir.path());
  ASSERT_TRUE(a.ok()) << a.status().message();
  const std::string key = *crypto::GenerateP256Key();
  auto none = (*a)->IssueDeviceCertificate(*crypto::ParseCsr(*crypto::MakeCsr(key, "dev-1")),
                                           "dev-1", kNow, 86400);
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(none.status().message().find("requests no secure-aggregation signing key"),
            std::string::npos)
      << none.status().message();
  EXPECT_NE(none.status().message().find(crypto::kSecAggKeyOid), std::string::npos);
  // The identity point (small order) and a non-canonical encoding.
  std::string identity(32, '\0');
  identity[0] = 1;
  for (const std::string& bad : {identity, std::string(32, '\xff')}) {
    auto r = (*a)->IssueDeviceCertificate(*crypto::ParseCsr(*crypto::MakeCsr(key, "dev-1", bad)),
                                          "dev-1", kNow, 86400);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("not a valid Ed25519"), std::string::npos)
        << r.status().message();
  }
}

// The stored SecAgg key must be the one the stored certificate certifies. A seed left pending
// by an interrupted store is adopted when the certificate on disk certifies it; a missing or
// different seed, or a certificate without a key (enrolled before certified keys), loads the
// credentials without a SecAgg key and says why (the device then renews).
TEST(Identity, StoredSecAggKeyMustBeTheCertifiedOne) {
  TempDir dir;
  Ca ca;
  const std::string key = *crypto::GenerateP256Key();
  crypto::Secret32 seed;
  randombytes_buf(seed.data(), seed.size());
  const crypto::SigningKey secagg = crypto::SigningKey::FromSeed(seed);
  auto issue = [&](const std::string& certified) {
    crypto::CertRequest r;
    r.public_key_pem = *crypto::PublicKeyOf(key);
    r.common_name = "dev-1";
    r.role = crypto::CertRole::kDevice;
    r.not_before = kNow - 300;
    r.not_after = kNow + 3600;
    r.secagg_public_key = certified;
    return *crypto::IssueCertificate(ca.cert, ca.key, r);
  };
  const std::string seed_hex = crypto::ToHex(seed.data(), seed.size()) + "\n";
  dir.Write("device.key", key);
  dir.Write("ca.pem", ca.cert);
  dir.Write("model-signing.pub", std::string(64, 'a') + "\n");
  dir.Write("device.pem", issue(crypto::ToString(secagg.public_key())));
  auto load = [&] { return LoadCredentials(dir.path(), "dev-1", kNow); };

  auto missing = load();
  ASSERT_TRUE(missing.ok()) << missing.status().message();
  EXPECT_EQ(missing->secagg_key, nullptr);
  EXPECT_NE(missing->secagg_missing.find("secagg-signing.key"), std::string::npos);

  dir.Write("secagg-signing.key.pending", seed_hex);
  auto pending = load();
  ASSERT_TRUE(pending.ok());
  ASSERT_NE(pending->secagg_key, nullptr) << pending->secagg_missing;
  EXPECT_EQ(pending->secagg_key->public_key(), secagg.public_key());
  EXPECT_FALSE(FileExists(dir.path() + "/secagg-signing.key.pending"));
  EXPECT_EQ(ReadAll(dir.path() + "/secagg-signing.key"), seed_hex) << "adopted in place";
  EXPECT_NE(load()->secagg_key, nullptr);

  crypto::Secret32 other;
  randombytes_buf(other.data(), other.size());
  dir.Write("secagg-signing.key", crypto::ToHex(other.data(), other.size()) + "\n");
  auto wrong = load();
  ASSERT_TRUE(wrong.ok());
  EXPECT_EQ(wrong->secagg_key, nullptr);
  EXPECT_NE(wrong->secagg_missing.find("is not the key certificate"), std::string::npos)
      << wrong->secagg_missing;
  dir.Write("secagg-signing.key", "not hex\n");
  EXPECT_NE(load()->secagg_missing.find("not a 64-hex-digit Ed25519 seed"), std::string::npos);

  dir.Write("device.pem", issue(""));
  auto legacy = load();
  ASSERT_TRUE(legacy.ok());
  EXPECT_EQ(legacy->secagg_key, nullptr);
  EXPECT_NE(legacy->secagg_missing.find("predates certified secure-aggregation keys"),
            std::string::npos)
      << legacy->secagg_missing;
}

TEST(Identity, RenewalIsDueAtTwoThirdsOfTheLifetimeNotCountingBackdating) {
  crypto::CertInfo c;
  c.not_before = kNow - 300;
  c.not_after = kNow + 9;
  EXPECT_EQ(RenewalTime(c), kNow + 6);
  c.not_after = kNow + 7 * 86400;
  EXPECT_EQ(RenewalTime(c), kNow + 7 * 86400 * 2 / 3);
}

TEST(Identity, BootstrapFileErrorsNameTheProblem) {
  TempDir dir;
  Ca ca;
  std::string pem_path = dir.Write("ca.pem", ca.cert);
  auto ok = LoadBootstrap(dir.Write("b1.yaml", "coordinator: c:7443\nca_cert_file: ca.pem\n"
                                                "token: fleet1_x\n"));
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok->ca_pem, ca.cert) << "relative ca_cert_file resolves next to the bootstrap file";
  EXPECT_EQ(ok->coordinator, "c:7443");
  auto missing = LoadBootstrap(dir.Write("b2.yaml", "ca_cert_file: " + pem_path + "\n"));
  EXPECT_NE(missing.status().message().find("coordinator"), std::string::npos);
  auto both = LoadBootstrap(dir.Write("b3.yaml", "coordinator: c:1\nca_cert_file: " + pem_path +
                                                     "\nca_cert: x\n"));
  EXPECT_NE(both.status().message().find("exactly one of ca_cert"), std::string::npos);
  auto junk = LoadBootstrap(dir.Write("b4.yaml", "coordinator: c:1\nca_cert: not a pem\n"));
  EXPECT_NE(junk.status().message().find("not a PEM certificate"), std::string::npos);
  auto typo = LoadBootstrap(dir.Write("b5.yaml", "coordinator: c:1\ntoken: t\ntokn: t\n"));
  EXPECT_NE(typo.status().message().find("tokn"), std::string::npos) << typo.status().message();
}

// A task as the coordinator signs it. Fields changed afterwards travel under the original
// signature, which is what someone who edits a task in flight produces.
struct TestTask {
  v1::Task task;
  std::string signature;
  v1::Task* operator->() { return &task; }
  operator v1::SignedTask() const {
    v1::SignedTask s;
    s.set_task(task.SerializeAsString());
    s.set_signature(signature);
    return s;
  }
};

TestTask SignedTask(const crypto::SigningKey& key, const std::string& job, uint32_t round,
                    const std::string& params) {
  TestTask t;
  t->set_kind(v1::Task::TRAIN);
  t->set_job_id(job);
  t->set_round(round);
  t->set_parameters(params);
  t.signature = crypto::SignTask(key, t.task.SerializeAsString());
  return t;
}

TEST(ModelGuard, RefusesUnsignedTamperedForeignAndRolledBackModels) {
  ASSERT_TRUE(crypto::Init());
  crypto::SigningKey key = crypto::SigningKey::Generate();
  ModelGuard guard(key.public_key());
  EXPECT_TRUE(guard.Accept(SignedTask(key, "job-a", 3, "weights-3")).ok());

  TestTask unsigned_task = SignedTask(key, "job-a", 4, "w");
  unsigned_task.signature.clear();
  Status s = guard.Accept(unsigned_task).status();
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("not signed"), std::string::npos);

  TestTask tampered = SignedTask(key, "job-a", 4, "weights-4");
  tampered->mutable_parameters()->back() ^= 1;
  EXPECT_NE(guard.Accept(tampered).status().message().find("does not verify"), std::string::npos);

  TestTask foreign = SignedTask(key, "job-b", 4, "weights-4");
  foreign->set_job_id("job-a");  // a model signed for another job
  EXPECT_EQ(guard.Accept(foreign).status().code(), StatusCode::kPermissionDenied);

  TestTask other_round = SignedTask(key, "job-a", 5, "weights-5");
  other_round->set_round(6);
  EXPECT_EQ(guard.Accept(other_round).status().code(), StatusCode::kPermissionDenied);

  crypto::SigningKey stranger = crypto::SigningKey::Generate();
  EXPECT_EQ(guard.Accept(SignedTask(stranger, "job-a", 7, "w")).status().code(),
            StatusCode::kPermissionDenied);

  Status rollback = guard.Accept(SignedTask(key, "job-a", 2, "weights-2")).status();
  EXPECT_EQ(rollback.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(rollback.message().find("rollback"), std::string::npos);
  // Refusals changed nothing: the same round and newer ones are still accepted.
  EXPECT_TRUE(guard.Accept(SignedTask(key, "job-a", 3, "weights-3")).ok());
  EXPECT_TRUE(guard.Accept(SignedTask(key, "job-a", 4, "weights-4")).ok());
  EXPECT_TRUE(guard.Accept(SignedTask(key, "job-b", 1, "other job starts at 1")).ok());
}

TEST(AuditLog, ChainVerifiesAndAnyEditDeletionOrReorderIsFoundAtItsLine) {
  ASSERT_TRUE(crypto::Init());
  TempDir dir;
  const std::string path = dir.path() + "/audit.log";
  // The head recorded outside the file, as the coordinator's database does.
  const AuditKey key = AuditKey::Generate();
  std::optional<AuditHead> recorded;
  auto options = [&] {
    AuditLogOptions o;
    o.path = path;
    o.key = key.Copy();
    o.recorded = recorded;
    o.record_head = [&](const AuditHead& h) {
      recorded = h;
      return OkStatus();
    };
    return o;
  };
  {
    auto log = AuditLog::Open(options());
    ASSERT_TRUE(log.ok()) << log.status().message();
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE((*log)->Append("round_complete", "coordinator", {{"round", i}}).ok());
    }
  }
  {  // Reopening continues the same chain.
    auto log = AuditLog::Open(options());
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*log)->Append("job_stop", "alice", {{"job_id", "job-1"}}).ok());
  }
  auto v = VerifyAuditLog(path);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok);
  EXPECT_EQ(v->records, 6u);

  std::vector<std::string> lines;
  {
    std::ifstream in(path);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
  }
  auto check = [&](std::vector<std::string> edited, uint64_t line, const std::string& why) {
    std::ofstream(path, std::ios::trunc) << [&] {
      std::string s;
      for (const auto& l : edited) s += l + "\n";
      return s;
    }();
    auto r = VerifyAuditLog(path);
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r->ok);
    EXPECT_EQ(r->broken_line, line);
    EXPECT_NE(r->reason.find(why), std::string::npos) << r->reason;
    EXPECT_EQ(AuditLog::Open(options()).status().code(), StatusCode::kFailedPrecondition)
        << "a broken chain is not appended to";
  };
  auto edited = lines;
  edited[2].replace(edited[2].find("\"round\":2"), 9, "\"round\":7");
  check(edited, 3, "edited");
  auto deleted = lines;
  deleted.erase(deleted.begin() + 1);
  check(deleted, 2, "removed");
  auto swapped = lines;
  std::swap(swapped[3], swapped[4]);
  check(swapped, 4, "");
  auto garbage = lines;
  garbage[5] = "not json";
  check(garbage, 6, "JSON");
}

}  // namespace
}  // namespace fleet
