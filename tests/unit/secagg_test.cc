// SecAgg+ server and client state machines, run against each other in one process with injected
// graph randomness and a test fleet CA: dropouts at every stage, threshold edges, and every kind
// of forged, replayed, fabricated, duplicated or out-of-order message the issues name.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <set>

#include "aggregation/quantize.h"
#include "aggregation/secagg_client.h"
#include "aggregation/secagg_params.h"
#include "aggregation/secagg_server.h"
#include "aggregation/secagg_wire.h"
#include "crypto/pki.h"
#include "crypto/prg.h"
#include "crypto/random.h"
#include "crypto/shamir.h"

namespace fleet {
namespace {

using Stage = SecAggServer::Stage;

std::string Name(int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "dev-%03d", i);
  return buf;
}

constexpr int64_t kNow = 1'800'000'000;  // the devices' injected clock (2027)

// A round attempt's nonce, as the coordinator's CSPRNG would draw it (fixed here).
std::string Nonce(char fill) { return std::string(secagg_wire::kAttemptNonceBytes, fill); }

// A fleet CA issuing device certificates (DER) the way the coordinator's does.
struct TestCa {
  TestCa()
      : key(*crypto::GenerateP256Key()),
        cert(*crypto::MakeCaCertificate(key, "test CA", kNow - 86400, kNow + 30 * 86400)) {}
  std::string Issue(const std::string& id, const std::string& secagg_pk,
                    int64_t not_after = kNow + 3600,
                    crypto::CertRole role = crypto::CertRole::kDevice) const {
    static const std::string subject = *crypto::PublicKeyOf(*crypto::GenerateP256Key());
    crypto::CertRequest r;
    r.public_key_pem = subject;  // the TLS key plays no part here
    r.common_name = id;
    r.role = role;
    r.not_before = kNow - 300;
    r.not_after = not_after;
    r.secagg_public_key = secagg_pk;
    return *crypto::CertificateDer(*crypto::IssueCertificate(cert, key, r));
  }
  std::string key, cert;
};

// n simulated clients and one server. Client i is "dev-<i>" and gets index i + 1; each has a
// certificate from the sim's CA that certifies its signing key.
class Sim {
 public:
  Sim(int n, SecAggThreatModel threat, size_t length = 257, uint32_t bits = 32,
      uint32_t min_survivors = 3, std::string nonce = Nonce(1))
      : n_(n), length_(length), bits_(bits), threat_(threat) {
    EXPECT_TRUE(crypto::Init());
    verifier_ = std::move(crypto::CertificateVerifier::Create(ca_.cert)).value();
    std::mt19937_64 rng(7);
    cfg_.set_modulus_bits(bits);
    cfg_.set_min_survivors(min_survivors);
    SetThreatModel(threat_, &cfg_);  // signed with the task: clients derive (k, t) from it
    for (int i = 0; i < n; ++i) {
      keys_.push_back(std::make_unique<crypto::SigningKey>(crypto::SigningKey::Generate()));
      certs_.push_back(ca_.Issue(Name(i), crypto::ToString(keys_.back()->public_key())));
      std::vector<uint64_t> in(length);
      for (auto& v : in) v = rng() >> (bits == 32 ? 40 : 20);  // small enough not to matter
      inputs_.push_back(in);
    }
    NewAttempt(std::move(nonce));
  }

  // A new attempt of the same (job, round) with the same devices, keys and certificates: a new
  // server and new clients, under `nonce`.
  void NewAttempt(std::string nonce) {
    nonce_ = std::move(nonce);
    cfg_.set_attempt_nonce(nonce_);
    clients_.clear();
    in_sum_.clear();
    std::map<std::string, SecAggServer::Device> devices;
    for (int i = 0; i < n_; ++i) {
      devices[Name(i)] = {keys_[i]->public_key(), certs_[i]};
      clients_.push_back(std::make_unique<SecAggClient>(Options(i), keys_[i].get()));
    }
    SecAggServer::Options opt;
    opt.job_id = "job-1";
    opt.round = 3;
    opt.attempt_nonce = nonce_;
    opt.vector_length = length_;
    opt.modulus_bits = bits_;
    opt.min_survivors = cfg_.min_survivors();
    opt.threat = threat_;
    for (size_t i = 0; i < 32; ++i) opt.graph_seed.data()[i] = static_cast<uint8_t>(i * 7 + 1);
    auto s = SecAggServer::Create(std::move(opt), devices);
    EXPECT_TRUE(s.ok()) << s.status().message();
    server_ = std::move(s).value();
  }

  // Client i's options: this attempt's task config, the sim CA's verifier, the device clock.
  SecAggClient::Options Options(int i, int64_t now = kNow) const {
    SecAggClient::Options o{"job-1", 3, Name(i), cfg_, length_};
    o.verifier = verifier_.get();
    o.now = now;
    return o;
  }
  secagg_wire::Attempt Attempt() const { return {"job-1", 3, nonce_}; }

  // Runs the protocol; clients in `dropped` stop right before submitting at `drop_at`.
  void Run(Stage drop_at, const std::set<int>& dropped) {
    auto drops = [&](Stage s, int i) { return s == drop_at && dropped.count(i) > 0; };
    for (int i = 0; i < n_; ++i) {
      if (!drops(Stage::kAdvertise, i)) {
        auto keys = clients_[i]->Advertise();
        Ok(keys.status());
        Ok(server_->Advertise(Name(i), *keys));
      }
    }
    server_->CloseStage();
    for (int i = 0; i < n_; ++i) {
      auto r = server_->ResponseFor(Name(i), Stage::kAdvertise);
      if (!r.ok() || r->has_abort_reason()) continue;
      Ok(clients_[i]->OnNeighbours(r->neighbours()));
      auto shares = clients_[i]->ShareKeys();
      Ok(shares.status());
      if (!drops(Stage::kShareKeys, i)) Ok(server_->ShareKeys(Name(i), *shares));
    }
    server_->CloseStage();
    for (int i = 0; i < n_; ++i) {
      auto r = server_->ResponseFor(Name(i), Stage::kShareKeys);
      if (!r.ok() || r->has_abort_reason()) continue;
      Ok(clients_[i]->OnShares(r->shares()));
      auto masked = clients_[i]->MaskInput(inputs_[i]);
      Ok(masked.status());
      if (!drops(Stage::kMaskedInput, i)) {
        Ok(server_->MaskedInput(Name(i), *masked));
        in_sum_.insert(i);
      }
    }
    server_->CloseStage();
    for (int i = 0; i < n_; ++i) {
      auto r = server_->ResponseFor(Name(i), Stage::kMaskedInput);
      if (!r.ok() || r->has_abort_reason()) continue;
      auto c = clients_[i]->OnSurvivors(r->survivors());
      Ok(c.status());
      if (!drops(Stage::kConsistency, i)) Ok(server_->Consistency(Name(i), *c));
    }
    server_->CloseStage();
    for (int i = 0; i < n_; ++i) {
      auto r = server_->ResponseFor(Name(i), Stage::kConsistency);
      if (!r.ok() || r->has_abort_reason()) continue;
      auto u = clients_[i]->OnUnmaskRequest(r->unmask());
      Ok(u.status());
      if (!drops(Stage::kUnmask, i)) Ok(server_->Unmask(Name(i), *u));
    }
    server_->CloseStage();
  }

  std::vector<uint64_t> ExpectedSum() const {
    std::vector<uint64_t> sum(length_, 0);
    const uint64_t mask = bits_ == 32 ? 0xffffffffull : ~0ull;
    for (int i : in_sum_) {
      for (size_t j = 0; j < length_; ++j) sum[j] = (sum[j] + inputs_[i][j]) & mask;
    }
    return sum;
  }

  static void Ok(const Status& s) { ASSERT_TRUE(s.ok()) << s.message(); }

  int n_;
  size_t length_;
  uint32_t bits_;
  SecAggThreatModel threat_;
  std::string nonce_;
  TestCa ca_;
  std::unique_ptr<crypto::CertificateVerifier> verifier_;
  v1::SecAggTaskConfig cfg_;
  std::vector<std::unique_ptr<crypto::SigningKey>> keys_;
  std::vector<std::string> certs_;  // DER, by client
  std::vector<std::unique_ptr<SecAggClient>> clients_;
  std::vector<std::vector<uint64_t>> inputs_;
  std::unique_ptr<SecAggServer> server_;
  std::set<int> in_sum_;
};

SecAggThreatModel Complete(uint32_t n, uint32_t t) {
  SecAggThreatModel th;
  th.neighbours = n - 1 + (n - 1) % 2;  // even and >= n - 1: complete graph
  th.threshold = t;
  return th;
}

TEST(SecAgg, NoDropoutsGivesExactSum) {
  Sim sim(10, Complete(10, 6));
  sim.Run(Stage::kAdvertise, {});
  ASSERT_EQ(sim.server_->stage(), Stage::kDone) << sim.server_->abort_reason();
  EXPECT_EQ(sim.server_->sum(), sim.ExpectedSum());
  EXPECT_EQ(sim.server_->survivors(), 10u);
}

// Up to N - t dropouts at each of the four stages after AdvertiseKeys: correct sum. One more:
// a clean abort with nothing unmasked.
class DropoutAtStage : public ::testing::TestWithParam<Stage> {};

TEST_P(DropoutAtStage, UpToNMinusTSucceedsOneMoreAborts) {
  const int n = 10, t = 6;
  std::set<int> drop;
  for (int i = 0; i < n - t; ++i) drop.insert(i * 2);  // 0, 2, 4, 6
  {
    Sim sim(n, Complete(n, t));
    sim.Run(GetParam(), drop);
    ASSERT_EQ(sim.server_->stage(), Stage::kDone) << sim.server_->abort_reason();
    EXPECT_EQ(sim.server_->sum(), sim.ExpectedSum());
    size_t expect_in_sum = GetParam() <= Stage::kMaskedInput ? n - drop.size() : n;
    EXPECT_EQ(sim.server_->survivors(), expect_in_sum);
  }
  drop.insert(9);
  Sim sim(n, Complete(n, t));
  sim.Run(GetParam(), drop);
  EXPECT_EQ(sim.server_->stage(), Stage::kAborted);
  EXPECT_NE(sim.server_->abort_reason().find("threshold"), std::string::npos)
      << sim.server_->abort_reason();
  EXPECT_TRUE(sim.server_->sum().empty() ||
              std::all_of(sim.server_->sum().begin(), sim.server_->sum().end(),
                          [](uint64_t v) { return v == 0; }));
  auto r = sim.server_->ResponseFor(Name(1), Stage::kAdvertise);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->has_abort_reason());
}

INSTANTIATE_TEST_SUITE_P(Stages, DropoutAtStage,
                         ::testing::Values(Stage::kShareKeys, Stage::kMaskedInput,
                                           Stage::kConsistency, Stage::kUnmask),
                         [](const auto& p) { return std::string(SecAggServer::StageName(p.param)); });

TEST(SecAgg, SparseHararyGraphWithTenPercentDropouts64Bit) {
  SecAggThreatModel th;
  th.dropout_fraction = 0.1;
  Sim sim(50, th, 1000, 64);
  std::set<int> drop = {3, 11, 19, 27, 35};
  sim.Run(Stage::kMaskedInput, drop);
  ASSERT_EQ(sim.server_->stage(), Stage::kDone) << sim.server_->abort_reason();
  EXPECT_FALSE(sim.server_->params().complete);
  EXPECT_LT(sim.server_->params().k, 49u);
  EXPECT_EQ(sim.server_->sum(), sim.ExpectedSum());
  EXPECT_EQ(sim.server_->survivors(), 45u);
}

TEST(SecAgg, TooFewSurvivorsAbortsBeforeAnythingIsUnmasked) {
  Sim sim(5, Complete(5, 3), 16, 32, /*min_survivors=*/4);
  sim.Run(Stage::kMaskedInput, {0, 1});
  EXPECT_EQ(sim.server_->stage(), Stage::kAborted);
  EXPECT_NE(sim.server_->abort_reason().find("min_survivors"), std::string::npos);
}

// Runs the first two stages by hand so a test can tamper with what flows next.
struct Handshake {
  explicit Handshake(int n) : sim(n, Complete(n, n - 1)) {
    for (int i = 0; i < n; ++i) {
      Sim::Ok(sim.server_->Advertise(Name(i), *sim.clients_[i]->Advertise()));
    }
    sim.server_->CloseStage();
    for (int i = 0; i < n; ++i) {
      nb.push_back(sim.server_->ResponseFor(Name(i), Stage::kAdvertise)->neighbours());
    }
  }
  Sim sim;
  std::vector<v1::SecAggNeighbours> nb;
};

TEST(SecAgg, ForgedReplayedAndOutOfStageMessagesAreRejected) {
  Sim sim(4, Complete(4, 3));
  v1::SecAggKeys keys = *sim.clients_[0]->Advertise();
  v1::SecAggKeys forged = keys;
  forged.mutable_mask_public_key()->at(0) ^= 1;
  Status s = sim.server_->Advertise(Name(0), forged);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("signature"), std::string::npos) << s.message();
  Sim::Ok(sim.server_->Advertise(Name(0), keys));
  EXPECT_EQ(sim.server_->Advertise(Name(0), keys).code(), StatusCode::kAlreadyExists);
  // Another device's key under this device's name.
  EXPECT_EQ(sim.server_->Advertise(Name(1), keys).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(sim.server_->Advertise("stranger", keys).code(), StatusCode::kFailedPrecondition);
  // Out of stage: a masked input during AdvertiseKeys.
  s = sim.server_->MaskedInput(Name(0), std::string(4 * 257, 'x'));
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("out-of-stage"), std::string::npos) << s.message();

  // Keys signed for round 3 replayed into a round-4 server.
  SecAggServer::Options opt;
  opt.job_id = "job-1";
  opt.round = 4;
  opt.attempt_nonce = Nonce(1);
  opt.vector_length = 257;
  auto other = SecAggServer::Create(opt, {{Name(0), {sim.keys_[0]->public_key(), sim.certs_[0]}}});
  ASSERT_TRUE(other.ok());
  s = (*other)->Advertise(Name(0), keys);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("another job or round"), std::string::npos);
}

TEST(SecAgg, ClientRejectsBadPeerSignatureAndTamperedShares) {
  Handshake h(4);
  v1::SecAggNeighbours bad = h.nb[0];
  bad.mutable_peers(0)->mutable_keys()->mutable_cipher_public_key()->at(3) ^= 1;
  SecAggClient fresh(h.sim.Options(0), h.sim.keys_[0].get());
  ASSERT_TRUE(fresh.Advertise().ok());
  Status s = fresh.OnNeighbours(bad);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("bad signature"), std::string::npos) << s.message();

  for (int i = 0; i < 4; ++i) {
    Sim::Ok(h.sim.clients_[i]->OnNeighbours(h.nb[i]));
    Sim::Ok(h.sim.server_->ShareKeys(Name(i), *h.sim.clients_[i]->ShareKeys()));
  }
  h.sim.server_->CloseStage();
  v1::SecAggShares inbox = h.sim.server_->ResponseFor(Name(1), Stage::kShareKeys)->shares();
  v1::SecAggShares tampered = inbox;
  tampered.mutable_shares(0)->mutable_ciphertext()->at(40) ^= 1;
  s = h.sim.clients_[1]->OnShares(tampered);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("failed authentication"), std::string::npos) << s.message();
  // A share redirected to the wrong recipient fails too (AD binds from/to).
  EXPECT_FALSE(h.sim.clients_[2]->OnShares(inbox).ok());  // addressed to client 1 (index 2)
}

TEST(SecAgg, ServerRejectsMalformedSharesAndInputs) {
  Handshake h(4);
  for (int i = 0; i < 4; ++i) Sim::Ok(h.sim.clients_[i]->OnNeighbours(h.nb[i]));
  v1::SecAggShares shares = *h.sim.clients_[0]->ShareKeys();
  v1::SecAggShares missing = shares;
  missing.mutable_shares()->RemoveLast();
  EXPECT_EQ(h.sim.server_->ShareKeys(Name(0), missing).code(), StatusCode::kInvalidArgument);
  v1::SecAggShares spoofed = shares;
  spoofed.mutable_shares(0)->set_from(3);
  EXPECT_EQ(h.sim.server_->ShareKeys(Name(0), spoofed).code(), StatusCode::kInvalidArgument);
  Sim::Ok(h.sim.server_->ShareKeys(Name(0), shares));
  for (int i = 1; i < 4; ++i) {
    Sim::Ok(h.sim.server_->ShareKeys(Name(i), *h.sim.clients_[i]->ShareKeys()));
  }
  h.sim.server_->CloseStage();
  Status s = h.sim.server_->MaskedInput(Name(0), std::string(100, '\0'));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("expected 1028"), std::string::npos) << s.message();
  // The client refuses to mask a wrong-length input too, and names both lengths.
  Sim::Ok(h.sim.clients_[0]->OnShares(h.sim.server_->ResponseFor(Name(0), Stage::kShareKeys)
                                          ->shares()));
  auto short_input = h.sim.clients_[0]->MaskInput(std::string(4 * 100, '\1'));
  EXPECT_EQ(short_input.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(short_input.status().message().find("input has 100 elements, expected 257"),
            std::string::npos)
      << short_input.status().message();
}

TEST(SecAgg, ClientRefusesToRevealBothSharesOrContradictSurvivors) {
  Sim sim(5, Complete(5, 3));
  // Run up to the unmask request, with client 4 (index 5) dropping before its masked input.
  sim.Run(Stage::kMaskedInput, {4});
  ASSERT_EQ(sim.server_->stage(), Stage::kDone);
  // Fresh round, stopping before Unmasking so we can forge the request.
  Sim s2(5, Complete(5, 3));
  auto& srv = *s2.server_;
  for (int i = 0; i < 5; ++i) Sim::Ok(srv.Advertise(Name(i), *s2.clients_[i]->Advertise()));
  srv.CloseStage();
  for (int i = 0; i < 5; ++i) {
    Sim::Ok(s2.clients_[i]->OnNeighbours(srv.ResponseFor(Name(i), Stage::kAdvertise)->neighbours()));
    Sim::Ok(srv.ShareKeys(Name(i), *s2.clients_[i]->ShareKeys()));
  }
  srv.CloseStage();
  for (int i = 0; i < 5; ++i) {
    Sim::Ok(s2.clients_[i]->OnShares(srv.ResponseFor(Name(i), Stage::kShareKeys)->shares()));
    auto m = s2.clients_[i]->MaskInput(s2.inputs_[i]);
    if (i != 4) Sim::Ok(srv.MaskedInput(Name(i), *m));
  }
  srv.CloseStage();
  for (int i = 0; i < 4; ++i) {
    auto c = s2.clients_[i]->OnSurvivors(srv.ResponseFor(Name(i), Stage::kMaskedInput)->survivors());
    Sim::Ok(srv.Consistency(Name(i), *c));
  }
  srv.CloseStage();
  v1::SecAggUnmaskRequest honest = srv.ResponseFor(Name(0), Stage::kConsistency)->unmask();
  ASSERT_EQ(honest.pairwise_of_size(), 1);  // index 5 dropped
  EXPECT_EQ(honest.pairwise_of(0), 5u);

  v1::SecAggUnmaskRequest both = honest;
  both.add_pairwise_of(2);  // index 2 is also in self_mask_of
  auto r = s2.clients_[0]->OnUnmaskRequest(both);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("both"), std::string::npos) << r.status().message();

  v1::SecAggUnmaskRequest lying = honest;
  lying.clear_self_mask_of();
  lying.add_pairwise_of(2);  // claims survivor 2 dropped
  for (uint32_t v : honest.self_mask_of()) {
    if (v != 2) lying.add_self_mask_of(v);
  }
  r = s2.clients_[1]->OnUnmaskRequest(lying);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("alive"), std::string::npos) << r.status().message();

  v1::SecAggUnmaskRequest forged_sig = honest;
  forged_sig.mutable_signatures(0)->mutable_signature()->at(0) ^= 1;
  r = s2.clients_[2]->OnUnmaskRequest(forged_sig);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("does not verify"), std::string::npos);

  v1::SecAggUnmaskRequest unsigned_req = honest;
  unsigned_req.clear_signatures();
  r = s2.clients_[3]->OnUnmaskRequest(unsigned_req);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("signed the survivor set"), std::string::npos);
}

// Fuzz finding (tests/fuzz/corpus/secagg_client): a request naming a client twice was answered
// with its share twice. Nothing more leaks (the same share), but the client answers only
// well-formed requests: each client once.
TEST(SecAgg, ClientRefusesAnUnmaskRequestNamingAClientTwice) {
  Sim sim(4, Complete(4, 3));
  auto& srv = *sim.server_;
  for (int i = 0; i < 4; ++i) Sim::Ok(srv.Advertise(Name(i), *sim.clients_[i]->Advertise()));
  srv.CloseStage();
  for (int i = 0; i < 4; ++i) {
    Sim::Ok(
        sim.clients_[i]->OnNeighbours(srv.ResponseFor(Name(i), Stage::kAdvertise)->neighbours()));
    Sim::Ok(srv.ShareKeys(Name(i), *sim.clients_[i]->ShareKeys()));
  }
  srv.CloseStage();
  for (int i = 0; i < 4; ++i) {
    Sim::Ok(sim.clients_[i]->OnShares(srv.ResponseFor(Name(i), Stage::kShareKeys)->shares()));
    Sim::Ok(srv.MaskedInput(Name(i), *sim.clients_[i]->MaskInput(sim.inputs_[i])));
  }
  srv.CloseStage();
  for (int i = 0; i < 4; ++i) {
    auto c =
        sim.clients_[i]->OnSurvivors(srv.ResponseFor(Name(i), Stage::kMaskedInput)->survivors());
    Sim::Ok(srv.Consistency(Name(i), *c));
  }
  srv.CloseStage();
  v1::SecAggUnmaskRequest twice = srv.ResponseFor(Name(0), Stage::kConsistency)->unmask();
  twice.add_self_mask_of(twice.self_mask_of(0));
  auto r = sim.clients_[0]->OnUnmaskRequest(twice);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(
      r.status().message().find("names client " + std::to_string(twice.self_mask_of(0)) + " twice"),
      std::string::npos)
      << r.status().message();
  twice = srv.ResponseFor(Name(1), Stage::kConsistency)->unmask();
  twice.add_pairwise_of(7);
  twice.add_pairwise_of(7);
  r = sim.clients_[1]->OnUnmaskRequest(twice);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("names client 7 twice"), std::string::npos)
      << r.status().message();
  auto honest =
      sim.clients_[2]->OnUnmaskRequest(srv.ResponseFor(Name(2), Stage::kConsistency)->unmask());
  EXPECT_TRUE(honest.ok()) << honest.status().message();
}

TEST(SecAgg, ClientRefusesTooSmallSurvivorSet) {
  SecAggClient c({"job-1", 3, Name(0), {}, 8}, nullptr);
  // Out of order: survivors before anything else.
  v1::SecAggSurvivors s;
  s.add_indices(1);
  EXPECT_FALSE(c.OnSurvivors(s).ok());
}

TEST(SecAggParams, DerivedFromThreatModelAndInsecureOverridesRefused) {
  SecAggThreatModel th;  // 5% corrupt, 5% dropout
  auto p1000 = ChooseGraphParams(1000, th);
  ASSERT_TRUE(p1000.ok()) << p1000.status().message();
  EXPECT_FALSE(p1000->complete);
  // Same order as the paper's table (k = 30..40 for n = 1000 at these rates).
  EXPECT_GE(p1000->k, 20u);
  EXPECT_LE(p1000->k, 60u);
  EXPECT_GT(p1000->t, p1000->k / 4);
  auto p1m = ChooseGraphParams(1000000, th);
  ASSERT_TRUE(p1m.ok());
  EXPECT_GT(p1m->k, p1000->k);  // grows logarithmically
  EXPECT_LT(p1m->k, 2 * p1000->k);

  auto small = ChooseGraphParams(4, th);
  ASSERT_TRUE(small.ok());
  EXPECT_TRUE(small->complete);
  EXPECT_EQ(small->k, 3u);
  EXPECT_GE(small->t, 2u);

  EXPECT_FALSE(ChooseGraphParams(2, th).ok());
  SecAggThreatModel too_bad;
  too_bad.corrupt_fraction = 0.5;
  too_bad.dropout_fraction = 0.5;
  auto s = ChooseGraphParams(100, too_bad);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("0.9"), std::string::npos);

  SecAggThreatModel low_t;
  low_t.corrupt_fraction = 0.2;
  low_t.neighbours = 98;  // complete for n = 99/100
  low_t.threshold = 10;   // 20 corrupt clients could pool 20 shares
  s = ChooseGraphParams(100, low_t);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("insecure"), std::string::npos) << s.status().message();

  SecAggThreatModel thin;
  thin.neighbours = 2;  // a ring: two adjacent dropouts disconnect it
  s = ChooseGraphParams(1000, thin);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("disconnects"), std::string::npos);
  SecAggThreatModel one;
  one.threshold = 1;
  EXPECT_FALSE(ValidateThreatModel(one).ok());
}

// Fuzz finding (tests/fuzz/corpus/job_spec): at high corrupt and dropout rates the search for k
// summed every tail afresh, O(k^2) per k: 5 s for n = 1000 at 45% + 45%, 2 minutes for 3000
// (gcc -O2), in job validation and at every secure round. The same parameters now come in
// milliseconds.
TEST(SecAggParams, ChoosingParametersIsFastAtHighRates) {
  struct Case {
    uint32_t n;
    double rate;
    uint32_t k, t;  // what the slow search chose
  };
  for (const Case& c :
       {Case{1000, 0.45, 842, 424}, Case{3000, 0.3, 306, 157}, Case{1000, 0.3, 244, 126}}) {
    SecAggThreatModel th;
    th.corrupt_fraction = c.rate;
    th.dropout_fraction = c.rate;
    const auto start = std::chrono::steady_clock::now();
    StatusOr<SecAggGraphParams> p = ChooseGraphParams(c.n, th);
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(p.ok()) << p.status().message();
    EXPECT_EQ(p->k, c.k) << c.n;
    EXPECT_EQ(p->t, c.t) << c.n;
    EXPECT_LT(s, 1.0) << "n=" << c.n << " rate " << c.rate;
  }
  SecAggThreatModel th;  // the largest rates at the largest n a spec can name
  th.corrupt_fraction = 0.45;
  th.dropout_fraction = 0.45;
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(ChooseGraphParams(4'000'000'000u, th).ok());
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
}

TEST(Quantize, TwoThousandClientsCannotWrapAndMatchFloatFedAvg) {
  ASSERT_TRUE(crypto::Init());
  QuantizationSpec spec;
  spec.clip = 0.5f;
  spec.value_bits = 16;
  spec.max_weight = 1000;
  const uint64_t n = 2000;
  auto bits = ModulusBitsFor(n, spec.value_bits, spec.max_weight);
  ASSERT_TRUE(bits.ok());
  EXPECT_EQ(*bits, 64u);  // 2000 * 1000 * 65535 > 2^32
  EXPECT_EQ(*ModulusBitsFor(50, 16, 1000), 32u);
  spec.modulus_bits = *bits;

  const size_t d = 64;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> val(-0.7f, 0.7f);
  std::uniform_int_distribution<uint64_t> ex(1, 3000);
  std::vector<uint64_t> sum(d + kSecAggExtraElements, 0);
  std::vector<double> fsum(d, 0);
  double wsum = 0;
  for (uint64_t c = 0; c < n; ++c) {
    std::vector<float> delta(d);
    for (auto& x : delta) x = val(rng);
    if (c == 0) std::fill(delta.begin(), delta.end(), 0.5f);  // worst case: max value, max weight
    uint64_t examples = c == 0 ? 5000 : ex(rng);
    crypto::Secret32 seed;
    randombytes_buf(seed.data(), 32);
    auto q = *QuantizeUpdate(delta.data(), d, examples, 0.3, 0.8, spec, seed);
    const double w = static_cast<double>(std::min<uint64_t>(examples, spec.max_weight));
    for (size_t i = 0; i < q.size(); ++i) sum[i] += q[i];  // mod 2^64
    for (size_t i = 0; i < d; ++i) fsum[i] += w * std::clamp(delta[i], -0.5f, 0.5f);
    wsum += w;
  }
  auto deq = DequantizeSum(sum, spec);
  ASSERT_TRUE(deq.ok()) << deq.status().message();
  EXPECT_EQ(deq->total_weight, static_cast<uint64_t>(wsum));
  const double step = 2.0 * spec.clip / 65535;
  for (size_t i = 0; i < d; ++i) EXPECT_NEAR(deq->mean_delta[i], fsum[i] / wsum, step);
  EXPECT_NEAR(deq->train_loss, 0.3, 100.0 / 65535);
  EXPECT_NEAR(deq->val_accuracy, 0.8, 1.0 / 65535);

  // The worst case for N = 2000: every client at +clip with the maximum weight, exactly.
  std::vector<uint64_t> worst(d + kSecAggExtraElements, 0);
  std::vector<float> top(d, 10.0f);  // clipped to +clip
  crypto::Secret32 seed;
  for (uint64_t c = 0; c < n; ++c) {
    auto q = *QuantizeUpdate(top.data(), d, 1u << 30, 1e9, 1.0, spec, seed);
    for (size_t i = 0; i < q.size(); ++i) worst[i] += q[i];
  }
  auto w = DequantizeSum(worst, spec);
  ASSERT_TRUE(w.ok());
  for (float x : w->mean_delta) EXPECT_FLOAT_EQ(x, 0.5f);
  EXPECT_DOUBLE_EQ(w->train_loss, kSecAggLossClip);
}

// The packed form the client masks in place holds exactly QuantizeUpdate's elements, for both
// ring widths, over enough coordinates to cross several 512-uniform keystream chunks.
TEST(Quantize, PackedWordsEqualTheRingElements) {
  const size_t d = 1500;
  std::vector<float> delta(d);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> val(-2.0f, 2.0f);
  for (auto& x : delta) x = val(rng);
  crypto::Secret32 seed;
  randombytes_buf(seed.data(), 32);
  for (uint32_t bits : {32u, 64u}) {
    QuantizationSpec spec;
    spec.modulus_bits = bits;
    std::vector<uint64_t> elems = *QuantizeUpdate(delta.data(), d, 40, 0.7, 0.9, spec, seed);
    std::string words = *QuantizeToWords(delta.data(), d, 40, 0.7, 0.9, spec, seed);
    ASSERT_EQ(words.size(), elems.size() * bits / 8);
    EXPECT_EQ(words, *PackWords(elems, bits)) << bits;
    uint64_t first = 0;
    std::memcpy(&first, words.data(), bits / 8);  // little-endian
    EXPECT_EQ(first, elems[0]);
  }
  EXPECT_EQ(PackWords({uint64_t{1} << 32}, 32).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PackWords({1}, 16).status().code(), StatusCode::kInvalidArgument);
}

// End to end through the masks: the dequantized secure sum equals float FedAvg within one step.
TEST(SecAgg, MaskedWeightedFedAvgMatchesPlainWithinQuantizationError) {
  const int n = 6;
  const size_t d = 300;
  QuantizationSpec spec;
  spec.clip = 0.2f;
  Sim sim(n, Complete(n, 4), d + kSecAggExtraElements, 32);
  std::mt19937 rng(3);
  std::normal_distribution<float> g(0, 0.05f);
  std::vector<double> fsum(d, 0);
  double wsum = 0;
  for (int c = 0; c < n; ++c) {
    std::vector<float> delta(d);
    for (auto& x : delta) x = g(rng);
    uint64_t examples = 50 + 40 * c;
    crypto::Secret32 seed;
    randombytes_buf(seed.data(), 32);
    sim.inputs_[c] = *QuantizeUpdate(delta.data(), d, examples, 1.0, 0.5, spec, seed);
    if (c != 2) {  // client 2 drops before sending its masked input
      for (size_t i = 0; i < d; ++i) fsum[i] += examples * std::clamp(delta[i], -0.2f, 0.2f);
      wsum += examples;
    }
  }
  sim.Run(Stage::kMaskedInput, {2});
  ASSERT_EQ(sim.server_->stage(), Stage::kDone) << sim.server_->abort_reason();
  auto deq = DequantizeSum(sim.server_->sum(), spec);
  ASSERT_TRUE(deq.ok());
  EXPECT_EQ(deq->total_weight, static_cast<uint64_t>(wsum));
  const double step = 2.0 * spec.clip / 65535;
  for (size_t i = 0; i < d; ++i) EXPECT_NEAR(deq->mean_delta[i], fsum[i] / wsum, step) << i;
}

// ---------------------------------------------------------------- certified neighbours (#16 item
// 3)

// The keys `device` would advertise in `attempt`, signed with `key` (what a party holding that
// signing key can produce; the test plays a dishonest coordinator or device with it).
v1::SecAggKeys SignedKeys(const secagg_wire::Attempt& attempt, const std::string& device,
                          const crypto::SigningKey& key, const crypto::Bytes32& cipher,
                          const crypto::Bytes32& mask) {
  v1::SecAggKeys k;
  k.set_cipher_public_key(crypto::ToString(cipher));
  k.set_mask_public_key(crypto::ToString(mask));
  k.set_signing_public_key(crypto::ToString(key.public_key()));
  k.set_signature(key.Sign(
      secagg_wire::KeysMessage(attempt, device, k.cipher_public_key(), k.mask_public_key())));
  return k;
}

std::string Where(const v1::SecAggPeer& p) {
  return "neighbour " + std::to_string(p.index()) + " (device '" + p.device_id() + "')";
}

TEST(SecAggCertificates, ClientRefusesANeighbourWhoseCertificateDoesNotVouchForItsKey) {
  Handshake h(4);
  const v1::SecAggNeighbours honest = h.nb[0];
  const v1::SecAggPeer& peer = honest.peers(0);
  const std::string& key = peer.keys().signing_public_key();
  const std::string other_key = crypto::ToString(crypto::SigningKey::Generate().public_key());
  TestCa rogue;
  struct Case {
    const char* what;
    std::string certificate;
    int64_t now;
    const char* expect;
  };
  const TestCa& ca = h.sim.ca_;
  const std::vector<Case> cases = {
      {"signed by another CA", rogue.Issue(peer.device_id(), key), kNow, "does not chain"},
      {"names another id", ca.Issue("dev-999", key), kNow, "is for device 'dev-999'"},
      {"certifies another key", ca.Issue(peer.device_id(), other_key), kNow,
       "is not the one its certificate"},
      {"expired", h.sim.certs_[peer.index() - 1], kNow + 3601, "has expired"},
      {"not valid yet", h.sim.certs_[peer.index() - 1], kNow - 301, "not yet valid"},
      {"an admin certificate",
       ca.Issue(peer.device_id(), key, kNow + 3600, crypto::CertRole::kAdmin), kNow, "non-device"},
      {"certifies no key", ca.Issue(peer.device_id(), ""), kNow, "certifies no secure-aggregation"},
      {"missing", "", kNow, "without a certificate"},
      {"not a certificate", "\x30\x03\x02\x01\x01", kNow, "not a DER certificate"},
  };
  for (const Case& c : cases) {
    v1::SecAggNeighbours nb = honest;
    nb.mutable_peers(0)->set_certificate(c.certificate);
    SecAggClient client(h.sim.Options(0, c.now), h.sim.keys_[0].get());
    ASSERT_TRUE(client.Advertise().ok());
    Status s = client.OnNeighbours(nb);
    EXPECT_FALSE(s.ok()) << c.what;
    EXPECT_NE(s.message().find(Where(peer)), std::string::npos) << c.what << ": " << s.message();
    EXPECT_NE(s.message().find(c.expect), std::string::npos) << c.what << ": " << s.message();
    // Nothing secret leaves a client that refused its neighbours.
    EXPECT_FALSE(client.ShareKeys().ok()) << c.what;
  }
  SecAggClient client(h.sim.Options(0), h.sim.keys_[0].get());
  ASSERT_TRUE(client.Advertise().ok());
  EXPECT_TRUE(client.OnNeighbours(honest).ok());
}

// The attack of issue #16: the coordinator gives a target device neighbours it made itself. With
// all k = 3 neighbours its own and t = 3, the target's shares would let it rebuild the target's
// mask key and self-mask seed and so unmask its input. A coordinator without the fleet CA key
// can only pair its keys with the real neighbours' certificates, with certificates from a CA the
// devices do not trust, or with none: each is refused before any share is made.
TEST(SecAggCertificates, CoordinatorFabricatingNeighboursGetsNoShareOfTheTarget) {
  Handshake h(4);
  const v1::SecAggNeighbours honest = h.nb[0];
  ASSERT_EQ(honest.peers_size(), 3);
  ASSERT_EQ(honest.threshold(), 3u);
  TestCa rogue;
  struct Fake {
    crypto::SigningKey sign = crypto::SigningKey::Generate();
    crypto::DhKeyPair cipher = crypto::DhKeyPair::Generate();
    crypto::DhKeyPair mask = crypto::DhKeyPair::Generate();
  };
  std::map<uint32_t, Fake> fakes;
  for (const auto& p : honest.peers()) fakes[p.index()];
  enum class Cert { kRealNeighbours, kRogueCa, kNone };
  for (Cert variant : {Cert::kRealNeighbours, Cert::kRogueCa, Cert::kNone}) {
    SecAggClient target(h.sim.Options(0), h.sim.keys_[0].get());
    v1::SecAggKeys target_keys = *target.Advertise();
    const secagg_wire::Attempt attempt = h.sim.Attempt();
    v1::SecAggNeighbours forged = honest;
    for (auto& p : *forged.mutable_peers()) {
      Fake& f = fakes[p.index()];
      *p.mutable_keys() =
          SignedKeys(attempt, p.device_id(), f.sign, f.cipher.public_key, f.mask.public_key);
      if (variant == Cert::kRogueCa) {
        p.set_certificate(rogue.Issue(p.device_id(), crypto::ToString(f.sign.public_key())));
      } else if (variant == Cert::kNone) {
        p.clear_certificate();
      }  // else: the real neighbour's certificate, which certifies the real key
    }
    Status refused = target.OnNeighbours(forged);
    EXPECT_FALSE(refused.ok());
    EXPECT_NE(refused.message().find("neighbour "), std::string::npos) << refused.message();
    StatusOr<v1::SecAggShares> shares = target.ShareKeys();
    EXPECT_FALSE(shares.ok());
    if (!shares.ok()) continue;
    // What the attack would yield: open every share with the fabricated keys, rebuild the key.
    const uint32_t me = honest.my_index();
    crypto::Bytes32 target_cipher;
    crypto::FromString(target_keys.cipher_public_key(), &target_cipher);
    std::vector<crypto::ShamirShare> key_shares;
    for (const auto& s : shares->shares()) {
      const Fake& f = fakes[s.to()];
      const std::string& to_id = Name(static_cast<int>(s.to()) - 1);
      auto k =
          crypto::AgreeKey(f.cipher.secret_key, f.cipher.public_key, target_cipher,
                           secagg_wire::ShareKeyContext(attempt, {s.to(), to_id}, {me, Name(0)}));
      auto plain =
          crypto::Open(*k, s.ciphertext(),
                       secagg_wire::ShareAssociatedData(attempt, {me, Name(0)}, {s.to(), to_id}));
      if (plain.ok()) key_shares.push_back(*crypto::DecodeShare(plain->substr(44)));
    }
    auto sk = crypto::ShamirReconstruct(key_shares, 3);
    if (sk.ok()) {
      crypto::Bytes32 pk;
      crypto_scalarmult_base(pk.data(), sk->data());
      EXPECT_NE(crypto::ToString(pk), target_keys.mask_public_key())
          << "the coordinator rebuilt the target's mask key";
    }
  }
}

TEST(SecAggCertificates, VerifiedCertificatesAreCachedAndTheirValidityCheckedEveryTime) {
  TestCa ca;
  auto verifier = std::move(crypto::CertificateVerifier::Create(ca.cert)).value();
  const std::string der = ca.Issue("dev-1", std::string(32, '\7'), kNow + 3600);
  ASSERT_TRUE(verifier->Verify(der, kNow).ok());
  EXPECT_EQ(verifier->full_verifications(), 1u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(verifier->Verify(der, kNow + i)->id, "dev-1");
  EXPECT_EQ(verifier->full_verifications(), 1u);  // cache hits
  Status late = verifier->Verify(der, kNow + 3601).status();
  EXPECT_EQ(late.code(), StatusCode::kUnauthenticated);
  EXPECT_NE(late.message().find("expired"), std::string::npos) << late.message();
  EXPECT_NE(verifier->Verify(der, kNow - 301).status().message().find("not yet valid"),
            std::string::npos);
  // Failures are not remembered: a foreign certificate costs a verification each time.
  const std::string foreign = TestCa().Issue("dev-1", std::string(32, '\7'));
  EXPECT_FALSE(verifier->Verify(foreign, kNow).ok());
  EXPECT_FALSE(verifier->Verify(foreign, kNow).ok());
  EXPECT_EQ(verifier->full_verifications(), 3u);

  // Steady state: a second round among the same devices verifies no certificate again.
  Sim sim(5, Complete(5, 3));
  sim.Run(Stage::kAdvertise, {});
  ASSERT_EQ(sim.server_->stage(), Stage::kDone) << sim.server_->abort_reason();
  const uint64_t first = sim.verifier_->full_verifications();
  EXPECT_EQ(first, 5u);  // each certificate once (the sim's devices share one verifier)
  sim.NewAttempt(Nonce(2));
  sim.Run(Stage::kAdvertise, {});
  ASSERT_EQ(sim.server_->stage(), Stage::kDone) << sim.server_->abort_reason();
  EXPECT_EQ(sim.server_->sum(), sim.ExpectedSum());
  EXPECT_EQ(sim.verifier_->full_verifications(), first);
}

// ---------------------------------------------------------------- attempt binding

// The three stages before ConsistencyCheck, nobody dropping; returns each client's survivors.
std::vector<v1::SecAggSurvivors> ToConsistency(Sim& sim) {
  for (int i = 0; i < sim.n_; ++i)
    Sim::Ok(sim.server_->Advertise(Name(i), *sim.clients_[i]->Advertise()));
  sim.server_->CloseStage();
  for (int i = 0; i < sim.n_; ++i) {
    Sim::Ok(sim.clients_[i]->OnNeighbours(
        sim.server_->ResponseFor(Name(i), Stage::kAdvertise)->neighbours()));
    Sim::Ok(sim.server_->ShareKeys(Name(i), *sim.clients_[i]->ShareKeys()));
  }
  sim.server_->CloseStage();
  for (int i = 0; i < sim.n_; ++i) {
    Sim::Ok(
        sim.clients_[i]->OnShares(sim.server_->ResponseFor(Name(i), Stage::kShareKeys)->shares()));
    Sim::Ok(sim.server_->MaskedInput(Name(i), *sim.clients_[i]->MaskInput(sim.inputs_[i])));
  }
  sim.server_->CloseStage();
  std::vector<v1::SecAggSurvivors> out;
  for (int i = 0; i < sim.n_; ++i) {
    out.push_back(sim.server_->ResponseFor(Name(i), Stage::kMaskedInput)->survivors());
  }
  return out;
}

TEST(SecAggAttempt, NothingFromOneAttemptVerifiesInAnotherAttemptOfTheSameRound) {
  // Attempt A of (job-1, round 3), then attempt B of the same round with the same devices.
  Sim sim(4, Complete(4, 3), 257, 32, 3, Nonce(1));
  const secagg_wire::Attempt a = sim.Attempt();
  std::vector<v1::SecAggKeys> keys_a;
  for (int i = 0; i < 4; ++i) {
    keys_a.push_back(*sim.clients_[i]->Advertise());
    Sim::Ok(sim.server_->Advertise(Name(i), keys_a.back()));
  }
  sim.server_->CloseStage();
  const v1::SecAggNeighbours nb_a =
      sim.server_->ResponseFor(Name(0), Stage::kAdvertise)->neighbours();

  sim.NewAttempt(Nonce(2));
  const secagg_wire::Attempt b = sim.Attempt();
  // Advertised keys of A, replayed into B's server.
  Status s = sim.server_->Advertise(Name(0), keys_a[0]);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("another attempt"), std::string::npos) << s.message();
  // ... and A's neighbours (real certificates, A's signatures) shown to a client of B.
  SecAggClient c(sim.Options(0), sim.keys_[0].get());
  ASSERT_TRUE(c.Advertise().ok());
  s = c.OnNeighbours(nb_a);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("bad signature"), std::string::npos) << s.message();

  // Consistency signatures over the very same survivor set, made in A, offered in B.
  std::vector<v1::SecAggSurvivors> survivors = ToConsistency(sim);
  const std::vector<uint32_t> all(survivors[0].indices().begin(), survivors[0].indices().end());
  ASSERT_EQ(all, (std::vector<uint32_t>{1, 2, 3, 4}));
  v1::SecAggConsistency from_a;
  from_a.set_signature(sim.keys_[0]->Sign(secagg_wire::SurvivorsMessage(a, all)));
  s = sim.server_->Consistency(Name(0), from_a);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("does not verify"), std::string::npos) << s.message();
  for (int i = 0; i < 4; ++i) {
    Sim::Ok(sim.server_->Consistency(Name(i), *sim.clients_[i]->OnSurvivors(survivors[i])));
  }
  sim.server_->CloseStage();
  v1::SecAggUnmaskRequest ask = sim.server_->ResponseFor(Name(1), Stage::kConsistency)->unmask();
  for (auto& sig : *ask.mutable_signatures()) {
    sig.set_signature(sim.keys_[sig.index() - 1]->Sign(secagg_wire::SurvivorsMessage(a, all)));
  }
  auto unmask = sim.clients_[1]->OnUnmaskRequest(ask);
  EXPECT_FALSE(unmask.ok());
  EXPECT_NE(unmask.status().message().find("does not verify"), std::string::npos);

  // Associated data and key derivations of A are useless in B, even over the same DH keys.
  const crypto::DhKeyPair x = crypto::DhKeyPair::Generate(), y = crypto::DhKeyPair::Generate();
  const std::string id1 = Name(0), id2 = Name(1);
  auto share_key = [&](const secagg_wire::Attempt& at) {
    return *crypto::AgreeKey(x.secret_key, x.public_key, y.public_key,
                             secagg_wire::ShareKeyContext(at, {1, id1}, {2, id2}));
  };
  auto mask_seed = [&](const secagg_wire::Attempt& at) {
    return *crypto::AgreeKey(x.secret_key, x.public_key, y.public_key,
                             secagg_wire::MaskSeedContext(at, {1, id1}, {2, id2}));
  };
  EXPECT_NE(crypto::ToHex(share_key(a).data(), 32), crypto::ToHex(share_key(b).data(), 32));
  EXPECT_NE(crypto::ToHex(mask_seed(a).data(), 32), crypto::ToHex(mask_seed(b).data(), 32));
  const std::string sealed =
      crypto::Seal(share_key(a), "share", secagg_wire::ShareAssociatedData(a, {1, id1}, {2, id2}));
  EXPECT_TRUE(
      crypto::Open(share_key(a), sealed, secagg_wire::ShareAssociatedData(a, {1, id1}, {2, id2}))
          .ok());
  EXPECT_FALSE(
      crypto::Open(share_key(a), sealed, secagg_wire::ShareAssociatedData(b, {1, id1}, {2, id2}))
          .ok());

  // Without a proper nonce neither side starts.
  SecAggClient::Options no_nonce = sim.Options(0);
  no_nonce.config.clear_attempt_nonce();
  SecAggClient refusing(no_nonce, sim.keys_[0].get());
  auto advertised = refusing.Advertise();
  EXPECT_FALSE(advertised.ok());
  EXPECT_NE(advertised.status().message().find("attempt nonce"), std::string::npos);
  SecAggServer::Options opt;
  opt.job_id = "job-1";
  opt.round = 3;
  opt.vector_length = 8;
  opt.attempt_nonce = "short";
  EXPECT_FALSE(SecAggServer::Create(opt, {}).ok());
}

TEST(SecAggAttempt, ADeviceRefusesAnAttemptNonceItAlreadyUsed) {
  AttemptNonces used(/*capacity=*/2);
  EXPECT_TRUE(used.Use(Nonce(1)).ok());
  EXPECT_TRUE(used.Use(Nonce(2)).ok());
  Status again = used.Use(Nonce(1));
  EXPECT_EQ(again.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(again.message().find("reused the attempt nonce"), std::string::npos);
  EXPECT_TRUE(used.Use(Nonce(3)).ok());  // forgets the oldest (1) beyond its capacity
  EXPECT_FALSE(used.Use(Nonce(2)).ok());
  EXPECT_TRUE(used.Use(Nonce(1)).ok());
  EXPECT_TRUE(used.Use("").ok()) << "malformed: left to SecAggClient::Advertise";
  EXPECT_TRUE(used.Use("").ok());
}

// ---------------------------------------------------------------- duplicates, pairwise KDF

TEST(SecAggDuplicates, ServerRefusesAKeyAnotherDeviceOfTheRoundAdvertised) {
  Sim sim(4, Complete(4, 3));
  const v1::SecAggKeys k0 = *sim.clients_[0]->Advertise();
  Sim::Ok(sim.server_->Advertise(Name(0), k0));
  crypto::Bytes32 c0, m0;
  crypto::FromString(k0.cipher_public_key(), &c0);
  crypto::FromString(k0.mask_public_key(), &m0);
  const crypto::Bytes32 fresh = crypto::DhKeyPair::Generate().public_key;
  struct Case {
    crypto::Bytes32 cipher, mask;
    const char* expect;
  };
  for (const Case& c : {Case{c0, fresh, "cipher key of device dev-001 equals a key device dev-000"},
                        Case{fresh, c0, "mask key of device dev-001 equals a key device dev-000"},
                        Case{fresh, m0, "mask key of device dev-001 equals a key device dev-000"},
                        Case{m0, fresh, "cipher key of device dev-001 equals a key device dev-000"},
                        Case{fresh, fresh, "same key as its cipher key and its mask key"}}) {
    Status s = sim.server_->Advertise(
        Name(1), SignedKeys(sim.Attempt(), Name(1), *sim.keys_[1], c.cipher, c.mask));
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find(c.expect), std::string::npos) << s.message();
  }
  // The refusals changed nothing: dev-001 still advertises its own keys.
  Sim::Ok(sim.server_->Advertise(Name(1), *sim.clients_[1]->Advertise()));

  // Two devices registered with one signing key (e.g. a device that had another's key
  // certified): the second to advertise is refused.
  SecAggServer::Options opt;
  opt.job_id = "job-1";
  opt.round = 3;
  opt.attempt_nonce = Nonce(1);
  opt.vector_length = 8;
  const crypto::SigningKey& shared = *sim.keys_[0];
  auto server =
      std::move(SecAggServer::Create(opt, {{Name(0), {shared.public_key(), sim.certs_[0]}},
                                           {Name(1), {shared.public_key(), sim.certs_[0]}}}))
          .value();
  auto dh = [] { return crypto::DhKeyPair::Generate().public_key; };
  Sim::Ok(server->Advertise(Name(0), SignedKeys(sim.Attempt(), Name(0), shared, dh(), dh())));
  Status s = server->Advertise(Name(1), SignedKeys(sim.Attempt(), Name(1), shared, dh(), dh()));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("signing key of device dev-001 equals a key device dev-000"),
            std::string::npos)
      << s.message();
}

TEST(SecAggDuplicates, ClientRefusesANeighbourSetThatRepeatsAnIdOrAKey) {
  Handshake h(4);
  Sim& sim = h.sim;
  const v1::SecAggNeighbours honest = h.nb[0];
  auto device_of = [](const v1::SecAggPeer& p) { return static_cast<int>(p.index()) - 1; };
  auto refused = [&](const v1::SecAggNeighbours& nb, SecAggClient* c) {
    Status s = c->OnNeighbours(nb);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("duplicate in the neighbour set"), std::string::npos) << s.message();
  };
  auto client = [&] {
    auto c = std::make_unique<SecAggClient>(sim.Options(0), sim.keys_[0].get());
    EXPECT_TRUE(c->Advertise().ok());
    return c;
  };
  {  // the same neighbour twice, under two indices
    v1::SecAggNeighbours nb = honest;
    const uint32_t index = nb.peers(1).index();
    *nb.mutable_peers(1) = nb.peers(0);
    nb.mutable_peers(1)->set_index(index);
    refused(nb, client().get());
  }
  {  // a neighbour advertising another neighbour's cipher key
    v1::SecAggNeighbours nb = honest;
    v1::SecAggPeer* p = nb.mutable_peers(1);
    crypto::Bytes32 cipher, mask;
    crypto::FromString(nb.peers(0).keys().cipher_public_key(), &cipher);
    crypto::FromString(p->keys().mask_public_key(), &mask);
    *p->mutable_keys() =
        SignedKeys(sim.Attempt(), p->device_id(), *sim.keys_[device_of(*p)], cipher, mask);
    refused(nb, client().get());
  }
  {  // a neighbour advertising this client's own mask key as its cipher key
    auto c = std::make_unique<SecAggClient>(sim.Options(0), sim.keys_[0].get());
    v1::SecAggKeys mine = *c->Advertise();
    v1::SecAggNeighbours nb = honest;
    v1::SecAggPeer* p = nb.mutable_peers(0);
    crypto::Bytes32 cipher, mask;
    crypto::FromString(mine.mask_public_key(), &cipher);
    crypto::FromString(p->keys().mask_public_key(), &mask);
    *p->mutable_keys() =
        SignedKeys(sim.Attempt(), p->device_id(), *sim.keys_[device_of(*p)], cipher, mask);
    refused(nb, c.get());
  }
  {  // a neighbour whose certificate certifies this client's own signing key
    v1::SecAggNeighbours nb = honest;
    v1::SecAggPeer* p = nb.mutable_peers(0);
    crypto::Bytes32 cipher, mask;
    crypto::FromString(p->keys().cipher_public_key(), &cipher);
    crypto::FromString(p->keys().mask_public_key(), &mask);
    *p->mutable_keys() = SignedKeys(sim.Attempt(), p->device_id(), *sim.keys_[0], cipher, mask);
    p->set_certificate(sim.ca_.Issue(p->device_id(), crypto::ToString(sim.keys_[0]->public_key())));
    refused(nb, client().get());
  }
  EXPECT_TRUE(client()->OnNeighbours(honest).ok());
}

TEST(SecAggWire, PairwiseKeysNameBothPartiesIndicesAndIds) {
  const secagg_wire::Attempt at{"job-1", 3, Nonce(1)};
  const std::string a = "dev-a", b = "dev-b", e = "dev-e";
  const crypto::DhKeyPair x = crypto::DhKeyPair::Generate(), y = crypto::DhKeyPair::Generate();
  for (auto context : {&secagg_wire::MaskSeedContext, &secagg_wire::ShareKeyContext}) {
    auto key = [&](secagg_wire::Party p, secagg_wire::Party q) {
      crypto::Secret32 k =
          *crypto::AgreeKey(x.secret_key, x.public_key, y.public_key, context(at, p, q));
      return crypto::ToHex(k.data(), 32);
    };
    const std::string base = key({1, a}, {2, b});
    EXPECT_EQ(base, key({2, b}, {1, a}));  // both ends derive it
    EXPECT_NE(base, key({1, a}, {3, b}));  // another index
    EXPECT_NE(base, key({4, a}, {2, b}));
    EXPECT_NE(base, key({1, a}, {2, e}));  // another id
    EXPECT_NE(base, key({1, e}, {2, b}));
    EXPECT_NE(base, key({1, b}, {2, a}));  // the ids swapped between the indices
  }
  EXPECT_NE(secagg_wire::MaskSeedContext(at, {1, a}, {2, b}),
            secagg_wire::ShareKeyContext(at, {1, a}, {2, b}));
}

// ---------------------------------------------------------------- non-finite updates

TEST(Quantize, NonFiniteCoordinatesAreRefusedNamingTheCoordinate) {
  QuantizationSpec spec;
  crypto::Secret32 seed;
  std::vector<float> delta(100, 0.1f);
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    delta[17] = bad;
    auto q = QuantizeUpdate(delta.data(), delta.size(), 10, 0.5, 0.5, spec, seed);
    EXPECT_EQ(q.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(q.status().message().find("coordinate 17 "), std::string::npos)
        << q.status().message();
    EXPECT_NE(q.status().message().find(std::isnan(bad) ? "NaN" : "infinite"), std::string::npos);
    for (uint32_t bits : {32u, 64u}) {
      spec.modulus_bits = bits;
      auto w = QuantizeToWords(delta.data(), delta.size(), 10, 0.5, 0.5, spec, seed);
      EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
      EXPECT_NE(w.status().message().find("coordinate 17 "), std::string::npos);
    }
  }
  // A non-finite loss or accuracy is a metric, not a coordinate: reported as the worst value.
  delta[17] = 0.1f;
  auto q = QuantizeUpdate(delta.data(), delta.size(), 10, std::nan(""), -INFINITY, spec, seed);
  ASSERT_TRUE(q.ok()) << q.status().message();
  EXPECT_EQ((*q)[101], 10u * 65535u);
  EXPECT_EQ((*q)[102], 0u);
  // Dequantization refuses what it cannot invert instead of dividing by zero.
  std::vector<uint64_t> sum(*q);
  QuantizationSpec zero_bits = spec;
  zero_bits.value_bits = 0;
  EXPECT_FALSE(DequantizeSum(sum, zero_bits).ok());
  sum[100] = ~uint64_t{0};  // a total weight no quantization can produce
  EXPECT_EQ(DequantizeSum(sum, spec).status().code(), StatusCode::kInternal);
}

// ------------------------------------------------ parameters a relay cannot weaken (#16 floors)

// The relay's attack on a low threshold: with t = 2 over the four holders of the target's shares
// (the target among them), it shows holders {1, 2} a survivor set with the target and {3, 4} one
// without; each pair signs its own set (two signatures reach t), so the first pair reveals the
// target's self-mask seed and the second its mask key, and the target's masked input opens. The
// relay holds no CA key: every certificate and signature is real. Each client derives t = 3 for
// n = 4 from the signed threat model and refuses the lowered threshold before making a share.
TEST(SecAggFloors, ARelayLoweringTheThresholdGetsNoShareOfTheTarget) {
  Sim sim(4, SecAggThreatModel{});  // 5% corrupt, 5% dropout: complete graph, t = 3
  for (int i = 0; i < 4; ++i) {
    Sim::Ok(sim.server_->Advertise(Name(i), *sim.clients_[i]->Advertise()));
  }
  sim.server_->CloseStage();
  ASSERT_TRUE(sim.server_->params().complete);
  ASSERT_EQ(sim.server_->params().t, 3u);
  std::vector<v1::SecAggNeighbours> nb;
  int refused = 0;
  for (int i = 0; i < 4; ++i) {
    nb.push_back(sim.server_->ResponseFor(Name(i), Stage::kAdvertise)->neighbours());
    nb.back().set_threshold(2);
    Status s = sim.clients_[i]->OnNeighbours(nb.back());
    if (!s.ok()) {
      ++refused;
      EXPECT_NE(s.message().find("threshold 2 is below what the signed threat model gives"),
                std::string::npos)
          << s.message();
    }
    StatusOr<v1::SecAggShares> shares = sim.clients_[i]->ShareKeys();
    EXPECT_EQ(shares.ok(), s.ok());
    if (shares.ok()) Sim::Ok(sim.server_->ShareKeys(Name(i), *shares));
  }
  EXPECT_EQ(refused, 4);
  if (refused > 0) return;

  // Without the check: what the relay gets.
  sim.server_->CloseStage();  // relays the shares unchanged
  std::string target_masked;
  for (int i = 0; i < 4; ++i) {
    Sim::Ok(
        sim.clients_[i]->OnShares(sim.server_->ResponseFor(Name(i), Stage::kShareKeys)->shares()));
    StatusOr<std::string> m = sim.clients_[i]->MaskInput(sim.inputs_[i]);
    Sim::Ok(m.status());
    if (i == 0) target_masked = *m;
  }
  v1::SecAggSurvivors with_target, without_target;
  for (uint32_t v : {1, 2, 3, 4}) with_target.add_indices(v);
  for (uint32_t v : {2, 3, 4}) without_target.add_indices(v);
  v1::SecAggUnmaskRequest ask_self, ask_key;
  ask_self.add_self_mask_of(1);
  ask_key.add_pairwise_of(1);
  for (int i = 0; i < 4; ++i) {
    auto c = sim.clients_[i]->OnSurvivors(i < 2 ? with_target : without_target);
    Sim::Ok(c.status());
    auto* sig = (i < 2 ? ask_self : ask_key).add_signatures();
    sig->set_index(i + 1);
    sig->set_signature(c->signature());
  }
  std::vector<crypto::ShamirShare> self_shares, key_shares;
  for (int i = 0; i < 4; ++i) {
    auto r = sim.clients_[i]->OnUnmaskRequest(i < 2 ? ask_self : ask_key);
    Sim::Ok(r.status());
    for (const auto& s : r->shares()) {
      (s.self_mask() ? self_shares : key_shares).push_back(*crypto::DecodeShare(s.share()));
    }
  }
  auto seed = crypto::ShamirReconstruct(self_shares, 2);
  auto mask_key = crypto::ShamirReconstruct(key_shares, 2);
  ASSERT_TRUE(seed.ok() && mask_key.ok());
  crypto::Bytes32 mask_pk;
  crypto_scalarmult_base(mask_pk.data(), mask_key->data());
  uint32_t* w = reinterpret_cast<uint32_t*>(target_masked.data());
  crypto::ApplyMask<uint32_t>(*seed, crypto::MaskSign::kSubtract, w, sim.length_);
  for (const auto& p : nb[0].peers()) {
    crypto::Bytes32 peer_pk;
    crypto::FromString(p.keys().mask_public_key(), &peer_pk);
    auto pair = crypto::AgreeKey(
        *mask_key, mask_pk, peer_pk,
        secagg_wire::MaskSeedContext(sim.Attempt(), {1, Name(0)}, {p.index(), p.device_id()}));
    crypto::ApplyMask<uint32_t>(*pair, crypto::MaskSign::kSubtract, w, sim.length_);
  }
  EXPECT_FALSE(target_masked == *PackWords(sim.inputs_[0], 32))
      << "the relay unmasked the target's input by itself";
}

// Every other way the relay could state weaker parameters than the signed task allows.
TEST(SecAggFloors, ClientsDeriveKAndTFromTheSignedTaskAndRefuseWeakerOnes) {
  SecAggThreatModel sparse;  // n = 50, 10% dropout: a Harary graph
  sparse.dropout_fraction = 0.1;
  Sim sim(50, sparse, 16);
  for (int i = 0; i < 50; ++i) {
    Sim::Ok(sim.server_->Advertise(Name(i), *sim.clients_[i]->Advertise()));
  }
  sim.server_->CloseStage();
  const SecAggGraphParams p = sim.server_->params();
  ASSERT_FALSE(p.complete);
  const v1::SecAggNeighbours honest =
      sim.server_->ResponseFor(Name(0), Stage::kAdvertise)->neighbours();
  ASSERT_EQ(static_cast<uint32_t>(honest.peers_size()), p.k);
  auto refuses = [&](const v1::SecAggNeighbours& nb, const std::string& expect,
                     const SecAggClient::Options& o) {
    SecAggClient c(o, sim.keys_[0].get());
    ASSERT_TRUE(c.Advertise().ok());
    Status s = c.OnNeighbours(nb);
    EXPECT_FALSE(s.ok()) << expect;
    EXPECT_NE(s.message().find(expect), std::string::npos) << s.message();
    EXPECT_FALSE(c.ShareKeys().ok());
  };
  const SecAggClient::Options o = sim.Options(0);
  {
    SecAggClient c(o, sim.keys_[0].get());
    ASSERT_TRUE(c.Advertise().ok());
    Sim::Ok(c.OnNeighbours(honest));
  }
  v1::SecAggNeighbours low_t = honest;
  low_t.set_threshold(p.t - 1);
  refuses(low_t, "below what the signed threat model gives (n=50 k=" + std::to_string(p.k), o);
  v1::SecAggNeighbours fewer = honest;
  fewer.mutable_peers()->RemoveLast();
  fewer.mutable_peers()->RemoveLast();
  refuses(fewer, "sent " + std::to_string(p.k - 2) + " neighbours", o);
  // More neighbours at the same threshold: more holders, so more disjoint groups reach t.
  v1::SecAggNeighbours more = honest;
  std::set<uint32_t> in;
  for (const auto& q : honest.peers()) in.insert(q.index());
  in.insert(honest.my_index());
  for (uint32_t v = 1; v <= 50 && more.peers_size() < static_cast<int>(p.k) + 2; ++v) {
    if (in.count(v) > 0) continue;
    *more.add_peers() = sim.server_->ResponseFor(Name(static_cast<int>(v) - 1), Stage::kAdvertise)
                            ->neighbours()
                            .peers(0);  // stand-in entry, replaced below
    v1::SecAggPeer* q = more.mutable_peers(more.peers_size() - 1);
    q->set_index(v);
    q->set_device_id(Name(static_cast<int>(v) - 1));
  }
  refuses(more, "sent " + std::to_string(p.k + 2) + " neighbours", o);
  // A smaller n than the task's min_clients, and one the threat model cannot serve.
  SecAggClient::Options strict = o;
  strict.config.set_min_survivors(51);
  refuses(honest, "the signed task's min_clients is 51", strict);
  v1::SecAggNeighbours tiny = honest;
  tiny.set_num_clients(2);
  while (tiny.peers_size() > 1) tiny.mutable_peers()->RemoveLast();
  tiny.set_my_index(1);
  tiny.mutable_peers(0)->set_index(2);
  SecAggClient::Options lax = o;
  lax.config.set_min_survivors(0);
  refuses(tiny, "min_clients is 3", lax);  // never below 3, whatever the task says
  // An explicit threshold in the signed task is the floor (and passes the coordinator's rules).
  SecAggClient::Options explicit_t = o;
  explicit_t.config.set_neighbours(p.k);
  explicit_t.config.set_threshold(p.t + 1);
  refuses(honest, "threshold " + std::to_string(p.t) + " is below", explicit_t);
  SecAggClient::Options insecure_t = o;
  insecure_t.config.set_threshold(1);
  refuses(honest, "threshold 1 would let any single holder", insecure_t);
}

// The survivor floor is the signed task's min_clients, whatever n the relay states.
TEST(SecAggFloors, NoHelpUnmaskingASumBelowTheSignedMinClients) {
  Sim sim(5, Complete(5, 4), 16, 32, /*min_survivors=*/4);
  for (int i = 0; i < 5; ++i) {
    Sim::Ok(sim.server_->Advertise(Name(i), *sim.clients_[i]->Advertise()));
  }
  sim.server_->CloseStage();
  for (int i = 0; i < 5; ++i) {
    Sim::Ok(sim.clients_[i]->OnNeighbours(
        sim.server_->ResponseFor(Name(i), Stage::kAdvertise)->neighbours()));
    Sim::Ok(sim.server_->ShareKeys(Name(i), *sim.clients_[i]->ShareKeys()));
  }
  sim.server_->CloseStage();
  Sim::Ok(
      sim.clients_[0]->OnShares(sim.server_->ResponseFor(Name(0), Stage::kShareKeys)->shares()));
  Sim::Ok(sim.clients_[0]->MaskInput(sim.inputs_[0]).status());
  v1::SecAggSurvivors three;
  for (uint32_t v : {1, 2, 3}) three.add_indices(v);
  auto c = sim.clients_[0]->OnSurvivors(three);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("the signed task's min_clients is 4"), std::string::npos)
      << c.status().message();
}

}  // namespace
}  // namespace fleet
