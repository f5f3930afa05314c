// SecAgg+ micro benchmarks, each next to its floor measured in the same run:
//  - a client expanding and adding k pairwise masks plus its self mask over D words, against the
//    raw libsodium ChaCha20 keystream rate (goal: >= 0.8 of it per mask);
//  - the server's unmasking for N clients, D words, with a fraction dropped after ShareKeys
//    (self masks of the survivors, pairwise masks of the dropouts).
// Writes one JSON object to stdout.
//
// usage: secagg_bench [D] [K] [N] [DROP_FRACTION]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <vector>

#include "aggregation/secagg_client.h"
#include "aggregation/secagg_server.h"
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

// Runs a whole in-process round and returns the seconds spent in the final CloseStage (the
// server's reconstruction and unmasking).
double ServerUnmaskSeconds(int n, size_t d, double drop, SecAggGraphParams* params) {
  std::map<std::string, crypto::Bytes32> devices;
  std::vector<std::unique_ptr<crypto::SigningKey>> keys;
  std::vector<std::unique_ptr<SecAggClient>> clients;
  v1::SecAggTaskConfig cfg;
  cfg.set_modulus_bits(32);
  cfg.set_min_survivors(3);
  for (int i = 0; i < n; ++i) {
    keys.push_back(std::make_unique<crypto::SigningKey>(crypto::SigningKey::Generate()));
    devices[Name(i)] = keys.back()->public_key();
    clients.push_back(std::make_unique<SecAggClient>(
        SecAggClient::Options{"bench", 1, Name(i), cfg, d}, keys.back().get()));
  }
  SecAggServer::Options opt;
  opt.job_id = "bench";
  opt.round = 1;
  opt.vector_length = d;
  opt.threat.dropout_fraction = drop;
  auto server = std::move(SecAggServer::Create(opt, devices)).value();
  using S = SecAggServer::Stage;
  for (int i = 0; i < n; ++i) (void)server->Advertise(Name(i), clients[i]->Advertise());
  server->CloseStage();
  for (int i = 0; i < n; ++i) {
    (void)clients[i]->OnNeighbours(server->ResponseFor(Name(i), S::kAdvertise)->neighbours());
    (void)server->ShareKeys(Name(i), *clients[i]->ShareKeys());
  }
  server->CloseStage();
  const int dropped = static_cast<int>(drop * n);
  std::vector<uint64_t> zeros(d, 0);
  for (int i = 0; i < n; ++i) {
    (void)clients[i]->OnShares(server->ResponseFor(Name(i), S::kShareKeys)->shares());
    auto m = clients[i]->MaskInput(zeros);
    if (i >= dropped) (void)server->MaskedInput(Name(i), *m);
  }
  server->CloseStage();
  for (int i = dropped; i < n; ++i) {
    auto c = clients[i]->OnSurvivors(server->ResponseFor(Name(i), S::kMaskedInput)->survivors());
    (void)server->Consistency(Name(i), *c);
  }
  server->CloseStage();
  for (int i = dropped; i < n; ++i) {
    auto u = clients[i]->OnUnmaskRequest(server->ResponseFor(Name(i), S::kConsistency)->unmask());
    (void)server->Unmask(Name(i), *u);
  }
  auto t = Clock::now();
  server->CloseStage();
  double s = Seconds(t);
  *params = server->params();
  if (server->stage() != S::kDone) {
    std::fprintf(stderr, "secagg_bench: round aborted: %s\n", server->abort_reason().c_str());
    std::exit(1);
  }
  for (uint64_t v : server->sum()) {
    if (v != 0) {
      std::fprintf(stderr, "secagg_bench: masks did not cancel\n");
      std::exit(1);
    }
  }
  return s;
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
  SecAggGraphParams params;
  double unmask_s = ServerUnmaskSeconds(n, d, drop, &params);
  std::printf("{\"d\": %zu, \"k\": %d, \"mask_elems_per_s\": %.4g, \"keystream_elems_per_s\": "
              "%.4g, \"mask_to_keystream\": %.3f, \"server_unmask_n\": %d, "
              "\"server_unmask_dropout\": %.2f, \"server_unmask_k\": %u, \"server_unmask_t\": %u, "
              "\"server_unmask_s\": %.4f}\n",
              d, k, elems / mask_s, elems / keystream_s, keystream_s / mask_s, n, drop, params.k,
              params.t, unmask_s);
  return 0;
}
