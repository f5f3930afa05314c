// SecAgg+ micro benchmarks, each next to its floor measured in the same run:
//  - a client expanding and adding k pairwise masks plus its self mask over D words, against the
//    raw libsodium ChaCha20 keystream rate (goal: >= 0.8 of it per mask);
//  - the server's unmasking for N clients, D words, with a fraction dropped after ShareKeys
//    (self masks of the survivors, pairwise masks of the dropouts);
//  - protocol bytes per client beyond the masked input (every SecAgg request and response as it
//    goes on the wire, ids included) in an in-process round with k neighbours;
//  - one client's own work in that N = 50 round, quantization and the checks of its neighbours'
//    certificates included: in steady state, when each device has verified its neighbours'
//    certificates in an earlier round and finds them in its cache (client_ms_per_round), and in
//    the first round, when it verifies every one (client_ms_first_round);
//  - the unit costs of X25519 agreement, Ed25519 signing and verification, and of checking one
//    neighbour certificate uncached (ECDSA P-256 chain verification) and cached.
// Writes one JSON object to stdout.
//
// usage: secagg_bench [D] [K] [N] [DROP_FRACTION]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <set>
#include <vector>

#include "aggregation/quantize.h"
#include "aggregation/secagg_client.h"
#include "aggregation/secagg_server.h"
#include "crypto/keys.h"
#include "crypto/pki.h"
#include "crypto/prg.h"
#include "crypto/random.h"

using namespace fleet;
using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::time_point a) {
  return std::chrono::duration<double>(Clock::now() - a).count();
}

// Best of `reps` timings of fn().
template <typename F>
double Best(int reps, F fn) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    auto t = Clock::now();
    fn();
    best = std::min(best, Seconds(t));
  }
  return best;
}

std::string Name(int i) { return "dev-" + std::to_string(1000 + i); }

struct RoundStats {
  double unmask_s = 0;         // the final CloseStage: reconstruction and unmasking
  double client_s = 0;         // one client's own work in the round, quantization included
  double bytes_per_client = 0;  // SecAgg requests + responses, per surviving client
  SecAggGraphParams params;
};

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

// A fleet CA and the CA's own PEM.
struct Ca {
  Ca() : key(*crypto::GenerateP256Key()) {
    cert = *crypto::MakeCaCertificate(key, "bench CA", Now() - 300, Now() + 86400);
  }
  // A device certificate (DER) certifying `secagg_pk`, as the coordinator's CA issues it.
  std::string Issue(const std::string& id, const std::string& secagg_pk) const {
    crypto::CertRequest r;
    r.public_key_pem = *crypto::PublicKeyOf(*crypto::GenerateP256Key());
    r.common_name = id;
    r.role = crypto::CertRole::kDevice;
    r.not_before = Now() - 300;
    r.not_after = Now() + 86400;
    r.secagg_public_key = secagg_pk;
    return *crypto::CertificateDer(*crypto::IssueCertificate(cert, key, r));
  }
  std::string key, cert;
};

// n devices with certified signing keys; each has its own certificate verifier (its own cache,
// kept across rounds as a device keeps it).
struct Fleet {
  Fleet(const Ca& ca, int n) {
    for (int i = 0; i < n; ++i) {
      keys.push_back(std::make_unique<crypto::SigningKey>(crypto::SigningKey::Generate()));
      certs.push_back(ca.Issue(Name(i), crypto::ToString(keys.back()->public_key())));
      verifiers.push_back(std::move(crypto::CertificateVerifier::Create(ca.cert)).value());
    }
  }
  std::vector<std::unique_ptr<crypto::SigningKey>> keys;
  std::vector<std::string> certs;
  std::vector<std::unique_ptr<crypto::CertificateVerifier>> verifiers;
};

// Runs a whole in-process round among `fleet`, k = `neighbours` (0: derived from n and the
// dropout rate), with a fresh attempt nonce.
RoundStats InProcessRound(Fleet& fleet, size_t d, double drop, uint32_t neighbours) {
  const int n = static_cast<int>(fleet.keys.size());
  std::map<std::string, SecAggServer::Device> devices;
  std::vector<std::unique_ptr<SecAggClient>> clients;
  v1::SecAggTaskConfig cfg;
  cfg.set_modulus_bits(32);
  cfg.set_min_survivors(3);
  std::string nonce(32, '\0');
  randombytes_buf(nonce.data(), nonce.size());
  cfg.set_attempt_nonce(nonce);
  SecAggThreatModel threat;
  threat.dropout_fraction = drop;
  threat.neighbours = neighbours;
  SetThreatModel(threat, &cfg);  // the clients derive (k, t) from it, as the server does
  for (int i = 0; i < n; ++i) {
    devices[Name(i)] = {fleet.keys[i]->public_key(), fleet.certs[i]};
    SecAggClient::Options o{"bench", 1, Name(i), cfg, d};
    o.verifier = fleet.verifiers[i].get();
    o.now = Now();
    clients.push_back(std::make_unique<SecAggClient>(std::move(o), fleet.keys[i].get()));
  }
  SecAggServer::Options opt;
  opt.job_id = "bench";
  opt.round = 1;
  opt.attempt_nonce = nonce;
  opt.vector_length = d;
  opt.threat = threat;
  auto server = std::move(SecAggServer::Create(opt, devices)).value();
  using S = SecAggServer::Stage;
  size_t bytes = 0;
  double client_total = 0;  // seconds inside client calls, all clients
  auto client = [&](auto fn) {
    auto t = Clock::now();
    auto r = fn();
    client_total += Seconds(t);
    return r;
  };
  // What one client's step costs on the wire: its request with ids, and the answer it gets.
  auto request = [&](int i, auto set) {
    v1::SecAggRequest r;
    r.set_protocol_version(1);
    r.set_device_id(Name(i));
    r.set_job_id("job-0123456789ab");
    r.set_round(1);
    set(&r);
    bytes += r.ByteSizeLong();
  };
  auto response = [&](int i, S stage) {
    v1::SecAggResponse r = *server->ResponseFor(Name(i), stage);
    bytes += r.ByteSizeLong();
    return r;
  };
  for (int i = 0; i < n; ++i) {
    v1::SecAggKeys advertised = client([&] { return *clients[i]->Advertise(); });
    request(i, [&](v1::SecAggRequest* r) { *r->mutable_advertise() = advertised; });
    (void)server->Advertise(Name(i), advertised);
  }
  server->CloseStage();
  for (int i = 0; i < n; ++i) {
    v1::SecAggNeighbours nb = response(i, S::kAdvertise).neighbours();
    v1::SecAggShares shares = client([&] {
      Status s = clients[i]->OnNeighbours(nb);
      if (!s.ok()) {
        std::fprintf(stderr, "secagg_bench: %s\n", s.message().c_str());
        std::exit(1);
      }
      return *clients[i]->ShareKeys();
    });
    request(i, [&](v1::SecAggRequest* r) { *r->mutable_share_keys() = shares; });
    (void)server->ShareKeys(Name(i), shares);
  }
  server->CloseStage();
  const int dropped = static_cast<int>(drop * n);
  std::vector<float> delta(d - kSecAggExtraElements, 0.0f);
  const QuantizationSpec q{1.0f, 16, 1000, 32};
  for (int i = 0; i < n; ++i) {
    v1::SecAggShares relayed = response(i, S::kShareKeys).shares();
    auto m = client([&] {
      (void)clients[i]->OnShares(relayed);
      crypto::Secret32 rounding;
      randombytes_buf(rounding.data(), rounding.size());
      return clients[i]->MaskInput(
          *QuantizeToWords(delta.data(), delta.size(), 1, 0, 0, q, rounding));
    });
    if (i >= dropped) (void)server->MaskedInput(Name(i), *m);
  }
  server->CloseStage();
  for (int i = dropped; i < n; ++i) {
    request(i, [](v1::SecAggRequest* r) { r->set_await_survivors(true); });
    v1::SecAggSurvivors survivors = response(i, S::kMaskedInput).survivors();
    auto c = client([&] { return clients[i]->OnSurvivors(survivors); });
    request(i, [&](v1::SecAggRequest* r) { *r->mutable_consistency() = *c; });
    (void)server->Consistency(Name(i), *c);
  }
  server->CloseStage();
  for (int i = dropped; i < n; ++i) {
    v1::SecAggUnmaskRequest ask = response(i, S::kConsistency).unmask();
    auto u = client([&] { return clients[i]->OnUnmaskRequest(ask); });
    request(i, [&](v1::SecAggRequest* r) { *r->mutable_unmask() = *u; });
    (void)server->Unmask(Name(i), *u);
  }
  RoundStats stats;
  auto t = Clock::now();
  server->CloseStage();
  stats.unmask_s = Seconds(t);
  for (int i = dropped; i < n; ++i) bytes += response(i, S::kUnmask).ByteSizeLong();
  stats.bytes_per_client = static_cast<double>(bytes) / (n - dropped);
  stats.params = server->params();
  stats.client_s = client_total / n;
  if (server->stage() != S::kDone) {
    std::fprintf(stderr, "secagg_bench: round aborted: %s\n", server->abort_reason().c_str());
    std::exit(1);
  }
  // Every survivor sent a quantized zero update with weight 1.
  auto mean = DequantizeSum(server->sum(), q);
  bool cancelled = mean.ok() && mean->total_weight == static_cast<uint64_t>(n - dropped);
  for (size_t i = 0; cancelled && i < mean->mean_delta.size(); ++i) {
    cancelled = std::abs(mean->mean_delta[i]) < 1e-3f;
  }
  if (!cancelled) {
    std::fprintf(stderr, "secagg_bench: masks did not cancel\n");
    std::exit(1);
  }
  return stats;
}

}  // namespace

int main(int argc, char** argv) {
  if (!crypto::Init()) return 1;
  const size_t d = argc > 1 ? static_cast<size_t>(std::atof(argv[1])) : 100000;
  const int k = argc > 2 ? std::atoi(argv[2]) : 30;
  const int n = argc > 3 ? std::atoi(argv[3]) : 50;
  const double drop = argc > 4 ? std::atof(argv[4]) : 0.1;

  std::vector<crypto::Secret32> seeds(k + 1);
  for (auto& s : seeds) randombytes_buf(s.data(), s.size());
  std::vector<uint32_t> words(d, 0);
  std::vector<uint8_t> raw(d * sizeof(uint32_t));
  // Floor: raw keystream for k + 1 seeds, D words each.
  double keystream_s = Best(5, [&] {
    for (auto& s : seeds) crypto::Keystream(s, raw.data(), raw.size());
  });
  double mask_s = Best(5, [&] {
    for (size_t i = 0; i < seeds.size(); ++i) {
      crypto::ApplyMask<uint32_t>(seeds[i], i % 2 ? crypto::MaskSign::kAdd
                                                  : crypto::MaskSign::kSubtract,
                                  words.data(), d);
    }
  });
  const double elems = static_cast<double>(d) * seeds.size();
  // Unit costs of the per-device public-key work (best of 5 x 200 calls): with the keystream
  // rate they give the round's unavoidable extra CPU, the floor bench.sh sets the secure/plain
  // round ratio against.
  constexpr int kCalls = 200;
  crypto::DhKeyPair a = crypto::DhKeyPair::Generate(), b = crypto::DhKeyPair::Generate();
  const double x25519_s = Best(5, [&] {
    for (int i = 0; i < kCalls; ++i) {
      (void)crypto::AgreeKey(a.secret_key, a.public_key, b.public_key, "bench");
    }
  }) / kCalls;
  crypto::SigningKey signer = crypto::SigningKey::Generate();
  std::string signature;
  const double sign_s = Best(5, [&] {
    for (int i = 0; i < kCalls; ++i) signature = signer.Sign("fleetfl secagg bench message");
  }) / kCalls;
  const double verify_s = Best(5, [&] {
    for (int i = 0; i < kCalls; ++i) {
      if (!crypto::VerifySignature(signer.public_key(), "fleetfl secagg bench message",
                                   signature)) {
        std::exit(1);
      }
    }
  }) / kCalls;
  // One neighbour certificate: full chain verification, and a cache hit.
  const Ca ca;
  const std::string der = ca.Issue("dev-bench", crypto::ToString(signer.public_key()));
  double cert_verify_s = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<std::unique_ptr<crypto::CertificateVerifier>> fresh;  // empty caches
    for (int i = 0; i < kCalls; ++i) {
      fresh.push_back(std::move(crypto::CertificateVerifier::Create(ca.cert)).value());
    }
    auto t = Clock::now();
    for (auto& v : fresh) {
      if (!v->Verify(der, Now()).ok()) std::exit(1);
    }
    cert_verify_s = std::min(cert_verify_s, Seconds(t) / kCalls);
  }
  auto cached = std::move(crypto::CertificateVerifier::Create(ca.cert)).value();
  (void)cached->Verify(der, Now());
  const double cert_cached_s = Best(5,
                                    [&] {
                                      for (int i = 0; i < kCalls; ++i) {
                                        if (!cached->Verify(der, Now()).ok()) std::exit(1);
                                      }
                                    }) /
                               kCalls;
  // The same devices twice: the first round verifies every neighbour's certificate, the second
  // (steady state) finds them in each device's cache.
  Fleet fleet(ca, n);
  RoundStats first = InProcessRound(fleet, d, drop, 0);
  RoundStats unmask = InProcessRound(fleet, d, drop, 0);
  // Protocol bytes do not depend on D; k neighbours need n > k + 1 clients.
  Fleet wire_fleet(ca, std::max(100, 2 * k));
  RoundStats wire = InProcessRound(wire_fleet, 16, 0, static_cast<uint32_t>(k));
  std::printf(
      "{\"d\": %zu, \"k\": %d, \"mask_elems_per_s\": %.4g, \"keystream_elems_per_s\": "
      "%.4g, \"mask_to_keystream\": %.3f, \"server_unmask_n\": %d, "
      "\"server_unmask_dropout\": %.2f, \"server_unmask_k\": %u, \"server_unmask_t\": %u, "
      "\"server_unmask_s\": %.4f, \"protocol_bytes_per_client_k\": %u, "
      "\"protocol_bytes_per_client\": %.0f, \"client_ms_per_round\": %.2f, "
      "\"client_ms_first_round\": %.2f, "
      "\"x25519_us\": %.1f, \"ed25519_sign_us\": %.1f, \"ed25519_verify_us\": %.1f, "
      "\"cert_verify_us\": %.1f, \"cert_cached_verify_us\": %.2f}\n",
      d, k, elems / mask_s, elems / keystream_s, keystream_s / mask_s, n, drop, unmask.params.k,
      unmask.params.t, unmask.unmask_s, wire.params.k, wire.bytes_per_client, unmask.client_s * 1e3,
      first.client_s * 1e3, x25519_s * 1e6, sign_s * 1e6, verify_s * 1e6, cert_verify_s * 1e6,
      cert_cached_s * 1e6);
  return 0;
}
