// A SecAgg+ round in one process for the SecAgg fuzz targets: the real SecAggServer and
// kDevices real SecAggClients (aggregation/), each device with a certificate from a test fleet CA
// that certifies its signing key, exactly as the coordinator and the devices run them. One
// message of the round is tampered with: a client's message to the server (secagg_server_fuzz)
// or the server's answer to one client (secagg_client_fuzz), by the fuzzer's bytes.
//
// Every other party follows the protocol; a party whose step fails stops, as a device ends its
// part in the round. The round's outcome lets the targets check what must hold whatever the
// tampered message said.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "aggregation/quantize.h"
#include "aggregation/secagg_client.h"
#include "aggregation/secagg_server.h"
#include "crypto/keys.h"
#include "crypto/pki.h"
#include "crypto/random.h"
#include "tests/fuzz/fuzz_pki.h"
#include "tests/fuzz/fuzz_util.h"

namespace fleet::fuzz {

constexpr int kDevices = 4;
constexpr size_t kLength = 6;       // ring elements per input
constexpr int64_t kNow = kFuzzNow;  // the devices' clock
constexpr uint32_t kThreshold = 3;  // of 4 holders: one dropout is survivable
constexpr uint32_t kMinSurvivors = 3;
constexpr uint32_t kRound = 7;
constexpr char kJob[] = "job-fuzz";

using Stage = SecAggServer::Stage;

inline std::string DeviceName(int i) { return "dev-" + std::to_string(i); }

// The fleet (fuzz_pki.h): one verifier of the fuzz CA (its cache persists across inputs, as on
// a device), and each device's fixed signing key and certificate (DER). Built once.
struct World {
  std::unique_ptr<crypto::CertificateVerifier> verifier;
  std::vector<std::unique_ptr<crypto::SigningKey>> keys;
  std::vector<std::string> certs;

  static const World& Get() {
    static const World* world = [] {
      auto* w = new World;
      w->verifier = std::move(crypto::CertificateVerifier::Create(FuzzCaCert())).value();
      for (int i = 0; i < kDevices; ++i) {
        w->keys.push_back(std::make_unique<crypto::SigningKey>(FuzzSigningKey(i)));
        const std::string pem =
            FuzzDeviceCert(DeviceName(i), crypto::ToString(w->keys.back()->public_key()));
        w->certs.push_back(crypto::CertificateDer(pem).value());
      }
      return w;
    }();
    return *world;
  }
};

// How the fuzzer's bytes replace one message.
enum class TamperMode : uint8_t {
  kReplace,  // the bytes are the message
  kAppend,   // the honest message's bytes, then these (protobuf: fields merged or repeated)
  kXor,      // the honest message's bytes XORed with these from the start
  kCount
};

struct Tamper {
  bool to_client = false;  // false: `party`'s message at `stage`; true: the server's answer to
                           // `party`'s submission at `stage` (kAdvertise..kConsistency)
  Stage stage = Stage::kAdvertise;
  int party = 0;
  TamperMode mode = TamperMode::kReplace;
  std::string bytes;
};

struct Plan {
  uint32_t modulus_bits = 32;
  int dropper = -1;  // another device that stops right before submitting at drop_stage
  Stage drop_stage = Stage::kAdvertise;
  Tamper tamper;
  // When set, every message of the round as sent (before tampering) is kept here, keyed
  // "server/STAGE/PARTY" (a device's message) or "client/STAGE/PARTY" (the server's answer):
  // make_corpus.cc's seeds.
  std::map<std::string, std::string>* capture = nullptr;
};

struct Outcome {
  bool delivered = false;  // the tampered message parsed and reached its receiver
  bool accepted = false;   // ...and the receiver took it
  Stage end = Stage::kAdvertise;
  std::vector<uint64_t> sum;       // after kDone
  std::vector<uint64_t> expected;  // the honest inputs of the devices whose input is in the sum
  // The tampered party's view (to_client), when it got that far:
  std::optional<v1::SecAggNeighbours> neighbours;  // as it accepted them
  std::optional<std::vector<uint32_t>> signed_survivors;
  std::optional<v1::SecAggUnmaskResponse> revealed;  // what it sent at Unmasking
  uint32_t party_index = 0;
};

inline std::string ApplyTamper(const std::string& honest, const Tamper& t) {
  switch (t.mode) {
    case TamperMode::kReplace:
      return t.bytes;
    case TamperMode::kAppend:
      return honest + t.bytes;
    case TamperMode::kXor:
    case TamperMode::kCount:
      break;
  }
  std::string out = honest;
  for (size_t i = 0; i < out.size() && i < t.bytes.size(); ++i) out[i] ^= t.bytes[i];
  return out;
}

inline std::vector<uint64_t> HonestInput(int device, uint32_t bits) {
  std::vector<uint64_t> v(kLength + kSecAggExtraElements);
  for (size_t j = 0; j < v.size(); ++j) {
    v[j] = (uint64_t{static_cast<uint32_t>(device)} * 977 + j * 131 + 5) &
           (bits == 32 ? 0xffffull : 0xffffffffull);
  }
  return v;
}

inline Outcome RunRound(const Plan& plan) {
  const World& w = World::Get();
  const Tamper& t = plan.tamper;
  Outcome out;
  const size_t length = kLength + kSecAggExtraElements;

  v1::SecAggTaskConfig cfg;
  cfg.set_modulus_bits(plan.modulus_bits);
  cfg.set_min_survivors(kMinSurvivors);
  cfg.set_attempt_nonce(std::string(secagg_wire::kAttemptNonceBytes, '\x5a'));
  std::map<std::string, SecAggServer::Device> devices;
  std::vector<std::unique_ptr<SecAggClient>> clients;
  for (int i = 0; i < kDevices; ++i) {
    devices[DeviceName(i)] = {w.keys[i]->public_key(), w.certs[i]};
    SecAggClient::Options o{kJob, kRound, DeviceName(i), cfg, length};
    o.verifier = w.verifier.get();
    o.now = kNow;
    clients.push_back(std::make_unique<SecAggClient>(std::move(o), w.keys[i].get()));
  }
  SecAggServer::Options opt;
  opt.job_id = kJob;
  opt.round = kRound;
  opt.attempt_nonce = cfg.attempt_nonce();
  opt.vector_length = length;
  opt.modulus_bits = plan.modulus_bits;
  opt.min_survivors = kMinSurvivors;
  opt.threat.neighbours = kDevices;  // even and >= n - 1: the complete graph
  opt.threat.threshold = kThreshold;
  for (size_t i = 0; i < 32; ++i) opt.graph_seed.data()[i] = static_cast<uint8_t>(i);
  std::unique_ptr<SecAggServer> server =
      std::move(SecAggServer::Create(std::move(opt), std::move(devices))).value();

  std::vector<bool> alive(kDevices, true);
  std::set<int> in_sum;
  const bool tamper_server_side = !t.to_client;
  // A message from device i at `stage` on its way to the server: false when it does not arrive.
  auto keep = [&](const char* side, int i, Stage stage, const std::string& bytes) {
    if (plan.capture != nullptr) {
      (*plan.capture)[std::string(side) + "/" + std::to_string(static_cast<int>(stage)) + "/" +
                      std::to_string(i)] = bytes;
    }
  };
  auto to_server = [&](int i, Stage stage, std::string* bytes) {
    keep("server", i, stage, *bytes);
    if (i == plan.dropper && stage == plan.drop_stage) return false;
    if (tamper_server_side && i == t.party && stage == t.stage) {
      *bytes = ApplyTamper(*bytes, t);
      out.delivered = true;
    }
    return true;
  };
  auto to_server_msg = [&](int i, Stage stage, auto* msg) {
    std::string bytes = msg->SerializeAsString();
    if (!to_server(i, stage, &bytes)) return false;
    if (!msg->ParseFromString(bytes)) {
      if (tamper_server_side && i == t.party && stage == t.stage) out.delivered = false;
      return false;
    }
    return true;
  };
  // The server's answer to device i's submission at `stage`, on its way to the device.
  auto to_client_msg = [&](int i, Stage stage, auto* msg) {
    if (plan.capture != nullptr) keep("client", i, stage, msg->SerializeAsString());
    if (!t.to_client || i != t.party || stage != t.stage) return true;
    const std::string bytes = ApplyTamper(msg->SerializeAsString(), t);
    if (!msg->ParseFromString(bytes)) return false;
    out.delivered = true;
    return true;
  };
  auto tampered = [&](bool to_client, int i, Stage stage) {
    return t.to_client == to_client && i == t.party && stage == t.stage;
  };
  // The server's answer to i, or nullopt when i is out of the round (dropped, or aborted).
  auto answer = [&](int i, Stage submitted) -> std::optional<v1::SecAggResponse> {
    StatusOr<v1::SecAggResponse> r = server->ResponseFor(DeviceName(i), submitted);
    if (!r.ok() || r->has_abort_reason()) return std::nullopt;
    return std::move(r).value();
  };
  auto note = [&](bool to_client, int i, Stage stage, const Status& s) {
    if (tampered(to_client, i, stage) && out.delivered) out.accepted = s.ok();
    if (!s.ok()) alive[i] = false;
    return s.ok();
  };

  // Tampering with the server's answers to one device, only that device's view is checked: once
  // it is out of the round, the others' remaining steps change nothing (and take most of the
  // time).
  auto party_gone = [&] { return t.to_client && t.party >= 0 && !alive[t.party]; };

  // AdvertiseKeys
  for (int i = 0; i < kDevices; ++i) {
    StatusOr<v1::SecAggKeys> keys = clients[i]->Advertise();
    FUZZ_CHECK(keys.ok(), "honest Advertise failed: %s", keys.status().message().c_str());
    if (!to_server_msg(i, Stage::kAdvertise, &*keys)) {
      alive[i] = false;
      continue;
    }
    note(false, i, Stage::kAdvertise, server->Advertise(DeviceName(i), *keys));
  }
  server->CloseStage();
  if (party_gone()) return out;
  // ShareKeys
  for (int i = 0; i < kDevices; ++i) {
    if (!alive[i]) continue;
    std::optional<v1::SecAggResponse> r = answer(i, Stage::kAdvertise);
    if (!r) {
      alive[i] = false;
      continue;
    }
    v1::SecAggNeighbours nb = r->neighbours();
    if (!to_client_msg(i, Stage::kAdvertise, &nb)) {
      alive[i] = false;
      continue;
    }
    if (!note(true, i, Stage::kAdvertise, clients[i]->OnNeighbours(nb))) continue;
    if (t.to_client && i == t.party) {
      out.neighbours = nb;
      out.party_index = clients[i]->index();
    }
    StatusOr<v1::SecAggShares> shares = clients[i]->ShareKeys();
    if (!note(false, i, Stage::kShareKeys, shares.status())) continue;
    if (!to_server_msg(i, Stage::kShareKeys, &*shares)) {
      alive[i] = false;
      continue;
    }
    note(false, i, Stage::kShareKeys, server->ShareKeys(DeviceName(i), *shares));
  }
  server->CloseStage();
  if (party_gone()) return out;
  // MaskedInputCollection
  for (int i = 0; i < kDevices; ++i) {
    if (!alive[i]) continue;
    std::optional<v1::SecAggResponse> r = answer(i, Stage::kShareKeys);
    if (!r) {
      alive[i] = false;
      continue;
    }
    v1::SecAggShares shares = r->shares();
    if (!to_client_msg(i, Stage::kShareKeys, &shares)) {
      alive[i] = false;
      continue;
    }
    if (!note(true, i, Stage::kShareKeys, clients[i]->OnShares(shares))) continue;
    StatusOr<std::string> masked = clients[i]->MaskInput(
        PackWords(HonestInput(i, plan.modulus_bits), plan.modulus_bits).value());
    if (!note(false, i, Stage::kMaskedInput, masked.status())) continue;
    if (!to_server(i, Stage::kMaskedInput, &*masked)) {
      alive[i] = false;
      continue;
    }
    if (note(false, i, Stage::kMaskedInput, server->MaskedInput(DeviceName(i), *masked))) {
      in_sum.insert(i);
    }
  }
  server->CloseStage();
  if (party_gone()) return out;
  // ConsistencyCheck
  for (int i = 0; i < kDevices; ++i) {
    if (!alive[i]) continue;
    std::optional<v1::SecAggResponse> r = answer(i, Stage::kMaskedInput);
    if (!r) {
      alive[i] = false;
      continue;
    }
    v1::SecAggSurvivors survivors = r->survivors();
    if (!to_client_msg(i, Stage::kMaskedInput, &survivors)) {
      alive[i] = false;
      continue;
    }
    StatusOr<v1::SecAggConsistency> c = clients[i]->OnSurvivors(survivors);
    if (!note(true, i, Stage::kMaskedInput, c.status())) continue;
    if (t.to_client && i == t.party) {
      out.signed_survivors.emplace(survivors.indices().begin(), survivors.indices().end());
    }
    if (!to_server_msg(i, Stage::kConsistency, &*c)) {
      alive[i] = false;
      continue;
    }
    note(false, i, Stage::kConsistency, server->Consistency(DeviceName(i), *c));
  }
  server->CloseStage();
  if (party_gone()) return out;
  // Unmasking
  for (int i = 0; i < kDevices; ++i) {
    if (!alive[i]) continue;
    std::optional<v1::SecAggResponse> r = answer(i, Stage::kConsistency);
    if (!r) {
      alive[i] = false;
      continue;
    }
    v1::SecAggUnmaskRequest req = r->unmask();
    if (!to_client_msg(i, Stage::kConsistency, &req)) {
      alive[i] = false;
      continue;
    }
    StatusOr<v1::SecAggUnmaskResponse> u = clients[i]->OnUnmaskRequest(req);
    if (!note(true, i, Stage::kConsistency, u.status())) continue;
    if (t.to_client && i == t.party) out.revealed = *u;
    if (!to_server_msg(i, Stage::kUnmask, &*u)) {
      alive[i] = false;
      continue;
    }
    note(false, i, Stage::kUnmask, server->Unmask(DeviceName(i), *u));
  }
  server->CloseStage();

  out.end = server->stage();
  if (out.end == Stage::kDone) {
    out.sum = server->sum();
    out.expected.assign(length, 0);
    const uint64_t mask = plan.modulus_bits == 32 ? 0xffffffffull : ~0ull;
    for (int i : in_sum) {
      const std::vector<uint64_t> in = HonestInput(i, plan.modulus_bits);
      for (size_t j = 0; j < length; ++j) out.expected[j] = (out.expected[j] + in[j]) & mask;
    }
  }
  return out;
}

// The plan the first bytes of an input describe; the rest are the tamper bytes.
//   byte 0: stage (mod 5, or mod 4 for answers to a client)   byte 1: party (mod kDevices)
//   byte 2: tamper mode (mod 3)                              byte 3: bit 0 modulus 64 bits,
//   bits 1-3 a device that drops out (0: none) before the stage in bits 4-6
inline Plan PlanFrom(Input* in, bool to_client) {
  Plan p;
  p.tamper.to_client = to_client;
  p.tamper.stage = static_cast<Stage>(in->Byte() % (to_client ? 4 : 5));
  p.tamper.party = in->Byte() % kDevices;
  p.tamper.mode = static_cast<TamperMode>(in->Byte() % static_cast<int>(TamperMode::kCount));
  const uint8_t b = in->Byte();
  p.modulus_bits = (b & 1) ? 64 : 32;
  const int dropper = (b >> 1) & 7;
  if (dropper != 0 && (dropper - 1) % kDevices != p.tamper.party) {
    p.dropper = (dropper - 1) % kDevices;
    p.drop_stage = static_cast<Stage>(((b >> 4) & 7) % 5);
  }
  p.tamper.bytes = std::string(in->Rest());
  return p;
}

}  // namespace fleet::fuzz
