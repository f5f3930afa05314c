// SecAgg+ server and client state machines, run against each other in one process with injected
// graph randomness: dropouts at every stage, threshold edges, and every kind of forged, replayed
// or out-of-order message the issue names.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <set>

#include "aggregation/quantize.h"
#include "aggregation/secagg_client.h"
#include "aggregation/secagg_params.h"
#include "aggregation/secagg_server.h"
#include "aggregation/secagg_wire.h"
#include "crypto/random.h"

namespace fleet {
namespace {

using Stage = SecAggServer::Stage;

std::string Name(int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "dev-%03d", i);
  return buf;
}

// n simulated clients and one server. Client i is "dev-<i>" and gets index i + 1.
class Sim {
 public:
  Sim(int n, SecAggThreatModel threat, size_t length = 257, uint32_t bits = 32,
      uint32_t min_survivors = 3)
      : n_(n), length_(length), bits_(bits) {
    EXPECT_TRUE(crypto::Init());
    std::map<std::string, crypto::Bytes32> devices;
    std::mt19937_64 rng(7);
    for (int i = 0; i < n; ++i) {
      keys_.push_back(std::make_unique<crypto::SigningKey>(crypto::SigningKey::Generate()));
      devices[Name(i)] = keys_.back()->public_key();
      v1::SecAggTaskConfig cfg;
      cfg.set_modulus_bits(bits);
      cfg.set_min_survivors(min_survivors);
      clients_.push_back(std::make_unique<SecAggClient>(
          SecAggClient::Options{"job-1", 3, Name(i), cfg, length}, keys_.back().get()));
      std::vector<uint64_t> in(length);
      for (auto& v : in) v = rng() >> (bits == 32 ? 40 : 20);  // small enough not to matter
      inputs_.push_back(in);
    }
    SecAggServer::Options opt;
    opt.job_id = "job-1";
    opt.round = 3;
    opt.vector_length = length;
    opt.modulus_bits = bits;
    opt.min_survivors = min_survivors;
    opt.threat = threat;
    for (size_t i = 0; i < 32; ++i) opt.graph_seed.data()[i] = static_cast<uint8_t>(i * 7 + 1);
    auto s = SecAggServer::Create(std::move(opt), devices);
    EXPECT_TRUE(s.ok()) << s.status().message();
    server_ = std::move(s).value();
  }

  // Runs the protocol; clients in `dropped` stop right before submitting at `drop_at`.
  void Run(Stage drop_at, const std::set<int>& dropped) {
    auto drops = [&](Stage s, int i) { return s == drop_at && dropped.count(i) > 0; };
    for (int i = 0; i < n_; ++i) {
      if (!drops(Stage::kAdvertise, i)) Ok(server_->Advertise(Name(i), clients_[i]->Advertise()));
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
  std::vector<std::unique_ptr<crypto::SigningKey>> keys_;
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
      Sim::Ok(sim.server_->Advertise(Name(i), sim.clients_[i]->Advertise()));
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
  v1::SecAggKeys keys = sim.clients_[0]->Advertise();
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
  opt.vector_length = 257;
  auto other = SecAggServer::Create(opt, {{Name(0), sim.keys_[0]->public_key()}});
  ASSERT_TRUE(other.ok());
  s = (*other)->Advertise(Name(0), keys);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("another job or round"), std::string::npos);
}

TEST(SecAgg, ClientRejectsBadPeerSignatureAndTamperedShares) {
  Handshake h(4);
  v1::SecAggNeighbours bad = h.nb[0];
  bad.mutable_peers(0)->mutable_keys()->mutable_cipher_public_key()->at(3) ^= 1;
  SecAggClient fresh({"job-1", 3, Name(0), {}, 257}, h.sim.keys_[0].get());
  fresh.Advertise();
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
  for (int i = 0; i < 5; ++i) Sim::Ok(srv.Advertise(Name(i), s2.clients_[i]->Advertise()));
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
    auto q = QuantizeUpdate(delta.data(), d, examples, 0.3, 0.8, spec, seed);
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
    auto q = QuantizeUpdate(top.data(), d, 1u << 30, 1e9, 1.0, spec, seed);
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
    std::vector<uint64_t> elems = QuantizeUpdate(delta.data(), d, 40, 0.7, 0.9, spec, seed);
    std::string words = QuantizeToWords(delta.data(), d, 40, 0.7, 0.9, spec, seed);
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
    sim.inputs_[c] = QuantizeUpdate(delta.data(), d, examples, 1.0, 0.5, spec, seed);
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

}  // namespace
}  // namespace fleet
