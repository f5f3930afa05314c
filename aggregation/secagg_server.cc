#include "aggregation/secagg_server.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <sstream>

#include "aggregation/secagg_graph.h"
#include "aggregation/secagg_wire.h"
#include "crypto/keys.h"
#include "crypto/prg.h"

namespace fleet {

using Stage = SecAggServer::Stage;

const char* SecAggServer::StageName(Stage s) {
  switch (s) {
    case Stage::kAdvertise: return "AdvertiseKeys";
    case Stage::kShareKeys: return "ShareKeys";
    case Stage::kMaskedInput: return "MaskedInputCollection";
    case Stage::kConsistency: return "ConsistencyCheck";
    case Stage::kUnmask: return "Unmasking";
    case Stage::kDone: return "Done";
    case Stage::kAborted: return "Aborted";
  }
  return "?";
}

namespace {
Stage Next(Stage s) { return static_cast<Stage>(static_cast<int>(s) + 1); }
constexpr size_t kCiphertextBytes = 24 + secagg_wire::kSharePlaintextBytes + 16;
}  // namespace

StatusOr<std::unique_ptr<SecAggServer>> SecAggServer::Create(
    Options options, std::map<std::string, Device> devices) {
  if (options.modulus_bits != 32 && options.modulus_bits != 64) {
    return InvalidArgument("modulus_bits must be 32 or 64");
  }
  if (options.vector_length == 0) return InvalidArgument("vector_length must be > 0");
  if (options.attempt_nonce.size() != secagg_wire::kAttemptNonceBytes) {
    return InvalidArgument("attempt nonce must be " +
                           std::to_string(secagg_wire::kAttemptNonceBytes) + " bytes");
  }
  RETURN_IF_ERROR(ValidateThreatModel(options.threat));
  std::map<std::string, Client> clients;
  for (auto& [id, d] : devices) {
    clients[id].id = id;
    clients[id].signing_key = d.signing_key;
    clients[id].certificate = std::move(d.certificate);
  }
  return std::unique_ptr<SecAggServer>(new SecAggServer(std::move(options), std::move(clients)));
}

SecAggServer::SecAggServer(Options options, std::map<std::string, Client> clients)
    : options_(std::move(options)),
      attempt_{options_.job_id, options_.round, options_.attempt_nonce},
      clients_(std::move(clients)) {}

Status SecAggServer::Expect(const std::string& device, Stage stage, Client** client) {
  auto it = clients_.find(device);
  if (it == clients_.end()) {
    return FailedPrecondition("device " + device + " is not part of secure aggregation round " +
                              std::to_string(options_.round));
  }
  if (stage_ == Stage::kAborted) {
    return FailedPrecondition("round " + std::to_string(options_.round) + " aborted: " +
                              abort_reason_);
  }
  Client& c = it->second;
  if (Submitted(c, stage)) {
    return Status(StatusCode::kAlreadyExists,
                  "device " + device + " already sent its " + StageName(stage) + " message");
  }
  if (stage_ != stage) {
    return FailedPrecondition(std::string("out-of-stage message: got ") + StageName(stage) +
                              ", the round is in " + StageName(stage_));
  }
  if (stage != Stage::kAdvertise && !Submitted(c, static_cast<Stage>(static_cast<int>(stage) - 1))) {
    return FailedPrecondition("device " + device + " dropped out of the round before " +
                              StageName(stage));
  }
  *client = &c;
  return OkStatus();
}

bool SecAggServer::InSet(uint32_t index, Stage stage) const {
  return Submitted(ByIndex(index), stage);
}

Status SecAggServer::Advertise(const std::string& device, const v1::SecAggKeys& keys) {
  Client* c = nullptr;
  RETURN_IF_ERROR(Expect(device, Stage::kAdvertise, &c));
  crypto::Bytes32 cpk, spk, sign_pk;
  if (!crypto::FromString(keys.cipher_public_key(), &cpk) ||
      !crypto::FromString(keys.mask_public_key(), &spk) ||
      !crypto::FromString(keys.signing_public_key(), &sign_pk)) {
    return InvalidArgument("advertised keys must be 32 bytes each");
  }
  if (sign_pk != c->signing_key) {
    return InvalidArgument("advertised signing key is not the one device " + device +
                           " registered");
  }
  if (cpk == spk) {
    return InvalidArgument("device " + device +
                           " advertised the same key as its cipher key and its mask key");
  }
  std::string msg =
      secagg_wire::KeysMessage(attempt_, device, keys.cipher_public_key(), keys.mask_public_key());
  if (!crypto::VerifySignature(c->signing_key, msg, keys.signature())) {
    return InvalidArgument(
        "signature on advertised keys does not verify (forged, or replayed "
        "from another job or round, or another attempt of this round)");
  }
  // A key two devices share would let one stand in for the other (or a coordinator pose one
  // pair as two): refused, naming whose it already is.
  auto conflict = [&](const std::map<std::string, std::string>& seen, const std::string& key,
                      const char* what) -> Status {
    auto it = seen.find(key);
    if (it == seen.end()) return OkStatus();
    return InvalidArgument("advertised " + std::string(what) + " of device " + device +
                           " equals a key device " + it->second +
                           " advertised in this round: refused");
  };
  RETURN_IF_ERROR(conflict(dh_keys_, keys.cipher_public_key(), "cipher key"));
  RETURN_IF_ERROR(conflict(dh_keys_, keys.mask_public_key(), "mask key"));
  RETURN_IF_ERROR(conflict(signing_keys_, keys.signing_public_key(), "signing key"));
  dh_keys_[keys.cipher_public_key()] = device;
  dh_keys_[keys.mask_public_key()] = device;
  signing_keys_[keys.signing_public_key()] = device;
  c->keys = keys;
  c->reached = Next(Stage::kAdvertise);
  return OkStatus();
}

Status SecAggServer::ShareKeys(const std::string& device, const v1::SecAggShares& shares) {
  Client* c = nullptr;
  RETURN_IF_ERROR(Expect(device, Stage::kShareKeys, &c));
  const std::vector<uint32_t>& nb = graph_[c->index - 1];
  if (static_cast<size_t>(shares.shares_size()) != nb.size()) {
    return InvalidArgument("expected " + std::to_string(nb.size()) + " encrypted shares, got " +
                           std::to_string(shares.shares_size()));
  }
  std::set<uint32_t> seen;
  for (const auto& s : shares.shares()) {
    if (s.from() != c->index) {
      return InvalidArgument("share claims sender " + std::to_string(s.from()) +
                             ", the device's index is " + std::to_string(c->index));
    }
    if (!std::binary_search(nb.begin(), nb.end(), s.to()) || !seen.insert(s.to()).second) {
      return InvalidArgument("share addressed to " + std::to_string(s.to()) +
                             ", which is not a (new) neighbour");
    }
    if (s.ciphertext().size() != kCiphertextBytes) {
      return InvalidArgument("share ciphertext is " + std::to_string(s.ciphertext().size()) +
                             " bytes, expected " + std::to_string(kCiphertextBytes));
    }
  }
  c->outbox.assign(shares.shares().begin(), shares.shares().end());
  c->reached = Next(Stage::kShareKeys);
  return OkStatus();
}

template <>
uint32_t* SecAggServer::SumData<uint32_t>() {
  return sum32_.data();
}
template <>
uint64_t* SecAggServer::SumData<uint64_t>() {
  return sum_.data();
}

template <typename Word>
void SecAggServer::Accumulate(std::string_view packed) {
  Word* sum = SumData<Word>();
  const char* p = packed.data();
  for (size_t i = 0; i < options_.vector_length; ++i) {
    Word w;
    std::memcpy(&w, p + i * sizeof(Word), sizeof(Word));
    sum[i] += w;
  }
}

Status SecAggServer::MaskedInput(const std::string& device, std::string_view packed) {
  Client* c = nullptr;
  RETURN_IF_ERROR(Expect(device, Stage::kMaskedInput, &c));
  const size_t want = options_.vector_length * options_.modulus_bits / 8;
  if (packed.size() != want) {
    return InvalidArgument("masked input is " + std::to_string(packed.size()) +
                           " bytes, expected " + std::to_string(want) + " (" +
                           std::to_string(options_.vector_length) + " elements of " +
                           std::to_string(options_.modulus_bits) + " bits)");
  }
  if (options_.modulus_bits == 32) {
    Accumulate<uint32_t>(packed);
  } else {
    Accumulate<uint64_t>(packed);
  }
  c->reached = Next(Stage::kMaskedInput);
  return OkStatus();
}

Status SecAggServer::Consistency(const std::string& device, const v1::SecAggConsistency& msg) {
  Client* c = nullptr;
  RETURN_IF_ERROR(Expect(device, Stage::kConsistency, &c));
  std::string signed_msg = secagg_wire::SurvivorsMessage(attempt_, survivors_);
  if (!crypto::VerifySignature(c->signing_key, signed_msg, msg.signature())) {
    return InvalidArgument("consistency signature does not verify over this round's survivors");
  }
  c->consistency_signature = msg.signature();
  c->reached = Next(Stage::kConsistency);
  return OkStatus();
}

Status SecAggServer::Unmask(const std::string& device, const v1::SecAggUnmaskResponse& response) {
  Client* c = nullptr;
  RETURN_IF_ERROR(Expect(device, Stage::kUnmask, &c));
  StatusOr<v1::SecAggResponse> asked = ResponseFor(device, Stage::kConsistency);
  if (!asked.ok()) return asked.status();
  const auto& req = asked->unmask();
  std::set<uint32_t> want_self(req.self_mask_of().begin(), req.self_mask_of().end());
  std::set<uint32_t> want_key(req.pairwise_of().begin(), req.pairwise_of().end());
  std::vector<std::pair<uint32_t, crypto::ShamirShare>> self, key;
  std::set<uint32_t> seen;
  for (const auto& r : response.shares()) {
    auto& wanted = r.self_mask() ? want_self : want_key;
    if (wanted.count(r.owner()) == 0 || !seen.insert(r.owner()).second) {
      return InvalidArgument("revealed share for client " + std::to_string(r.owner()) +
                             " was not requested (or sent twice)");
    }
    StatusOr<crypto::ShamirShare> share = crypto::DecodeShare(r.share());
    if (!share.ok()) return share.status();
    if (share->x != c->index) {
      return InvalidArgument("revealed share has x=" + std::to_string(share->x) +
                             ", the device's index is " + std::to_string(c->index));
    }
    (r.self_mask() ? self : key).emplace_back(r.owner(), std::move(share).value());
  }
  for (auto& [owner, s] : self) self_shares_[owner].push_back(s);
  for (auto& [owner, s] : key) key_shares_[owner].push_back(s);
  c->reached = Next(Stage::kUnmask);
  return OkStatus();
}

std::vector<std::string> SecAggServer::Pending() const {
  std::vector<std::string> out;
  if (stage_ == Stage::kDone || stage_ == Stage::kAborted) return out;
  for (const auto& [id, c] : clients_) {
    bool eligible = stage_ == Stage::kAdvertise ||
                    Submitted(c, static_cast<Stage>(static_cast<int>(stage_) - 1));
    if (eligible && !Submitted(c, stage_)) out.push_back(id);
  }
  return out;
}

void SecAggServer::Abort(const std::string& reason) {
  if (stage_ == Stage::kDone || stage_ == Stage::kAborted) return;
  abort_reason_ = std::string("in ") + StageName(stage_) + ": " + reason;
  stage_ = Stage::kAborted;
  // Nothing masked survives an abort.
  std::fill(sum_.begin(), sum_.end(), 0);
  std::fill(sum32_.begin(), sum32_.end(), 0);
  self_shares_.clear();
  key_shares_.clear();
}

std::vector<uint32_t> SecAggServer::Holders(uint32_t index) const {
  std::vector<uint32_t> h = graph_[index - 1];
  h.push_back(index);
  return h;
}

bool SecAggServer::CheckRecoverable(Stage stage) {
  for (uint32_t u = 1; u <= by_index_.size(); ++u) {
    if (!InSet(u, Stage::kShareKeys)) continue;   // never masked with anyone
    const bool survivor = stage >= Stage::kMaskedInput ? InSet(u, Stage::kMaskedInput) : true;
    if (!survivor) {
      // A dropout's key is needed only if some neighbour's input is in the sum.
      bool needed = false;
      for (uint32_t v : graph_[u - 1]) needed |= InSet(v, Stage::kMaskedInput);
      if (!needed) continue;
    }
    size_t alive = 0;
    for (uint32_t h : Holders(u)) alive += InSet(h, stage) ? 1 : 0;
    if (alive < params_.t) {
      Abort("client " + std::to_string(u) + " has " + std::to_string(alive) +
            " live holders of its shares, below the threshold t=" + std::to_string(params_.t));
      return false;
    }
  }
  return true;
}

std::vector<std::string> SecAggServer::SurvivorIds() const {
  std::vector<std::string> out;
  out.reserve(survivors_.size());
  for (uint32_t u : survivors_) out.push_back(ByIndex(u).id);
  return out;
}

void SecAggServer::CloseStage() {
  if (stage_ == Stage::kDone || stage_ == Stage::kAborted) return;
  size_t submitted = 0;
  for (const auto& [id, c] : clients_) submitted += Submitted(c, stage_) ? 1 : 0;
  if (stage_ <= Stage::kMaskedInput && submitted < options_.min_survivors) {
    Abort(std::to_string(submitted) + " clients answered, fewer than min_survivors=" +
          std::to_string(options_.min_survivors));
    return;
  }
  switch (stage_) {
    case Stage::kAdvertise: {
      StatusOr<SecAggGraphParams> p =
          ChooseGraphParams(static_cast<uint32_t>(submitted), options_.threat);
      if (!p.ok()) return Abort(p.status().message());
      params_ = *p;
      for (auto& [id, c] : clients_) {  // map order: indices follow device ids
        if (Submitted(c, Stage::kAdvertise)) {
          by_index_.push_back(&c);
          c.index = static_cast<uint32_t>(by_index_.size());
        }
      }
      graph_ = BuildNeighbourGraph(params_.n, params_.k, params_.complete, options_.graph_seed);
      break;
    }
    case Stage::kShareKeys:
      if (!CheckRecoverable(Stage::kShareKeys)) return;
      if (options_.modulus_bits == 32) {
        sum32_.assign(options_.vector_length, 0);
      } else {
        sum_.assign(options_.vector_length, 0);
      }
      break;
    case Stage::kMaskedInput:
      if (!CheckRecoverable(Stage::kMaskedInput)) return;
      for (uint32_t u = 1; u <= by_index_.size(); ++u) {
        if (InSet(u, Stage::kMaskedInput)) survivors_.push_back(u);
      }
      break;
    case Stage::kConsistency:
      if (!CheckRecoverable(Stage::kConsistency)) return;
      break;
    case Stage::kUnmask:
      if (!CheckRecoverable(Stage::kUnmask)) return;
      FinishUnmask();
      return;
    default:
      return;
  }
  stage_ = Next(stage_);
}

template <typename Word>
void SecAggServer::RemoveMask(const crypto::Secret32& seed, bool add) {
  crypto::ApplyMask<Word>(seed, add ? crypto::MaskSign::kAdd : crypto::MaskSign::kSubtract,
                          SumData<Word>(), options_.vector_length);
}

void SecAggServer::FinishUnmask() {
  auto remove = [&](const crypto::Secret32& seed, bool add) {
    if (options_.modulus_bits == 32) {
      RemoveMask<uint32_t>(seed, add);
    } else {
      RemoveMask<uint64_t>(seed, add);
    }
  };
  // Survivors: reconstruct and remove the self mask.
  for (uint32_t u : survivors_) {
    StatusOr<crypto::Secret32> b = crypto::ShamirReconstruct(self_shares_[u], params_.t);
    if (!b.ok()) return Abort("self-mask seed of client " + std::to_string(u) + ": " +
                              b.status().message());
    remove(*b, false);
  }
  // Dropouts after ShareKeys: reconstruct the mask key, remove the survivors' pairwise masks.
  for (auto& [v, shares] : key_shares_) {
    StatusOr<crypto::Secret32> sk = crypto::ShamirReconstruct(shares, params_.t);
    if (!sk.ok()) return Abort("mask key of client " + std::to_string(v) + ": " +
                               sk.status().message());
    crypto::Bytes32 v_pk, derived;
    crypto::FromString(ByIndex(v).keys.mask_public_key(), &v_pk);
    crypto_scalarmult_base(derived.data(), sk->data());
    if (derived != v_pk) {
      return Abort("reconstructed mask key of client " + std::to_string(v) +
                   " does not match its advertised key (forged shares)");
    }
    for (uint32_t w : graph_[v - 1]) {
      if (!InSet(w, Stage::kMaskedInput)) continue;
      crypto::Bytes32 w_pk;
      crypto::FromString(ByIndex(w).keys.mask_public_key(), &w_pk);
      StatusOr<crypto::Secret32> seed = crypto::AgreeKey(
          *sk, v_pk, w_pk,
          secagg_wire::MaskSeedContext(attempt_, {v, ByIndex(v).id}, {w, ByIndex(w).id}));
      if (!seed.ok()) return Abort(seed.status().message());
      // w added the mask when v > w and subtracted it when v < w; undo that.
      remove(*seed, /*add=*/v < w);
    }
  }
  self_shares_.clear();
  key_shares_.clear();
  // Widen to one uint64 per element.
  if (options_.modulus_bits == 32) {
    sum_.assign(sum32_.begin(), sum32_.end());
    sum32_ = {};
  }
  stage_ = Stage::kDone;
}

StatusOr<v1::SecAggResponse> SecAggServer::ResponseFor(const std::string& device,
                                                       Stage submitted) const {
  v1::SecAggResponse r;
  if (stage_ == Stage::kAborted) {
    r.set_abort_reason(abort_reason_);
    return r;
  }
  auto it = clients_.find(device);
  if (it == clients_.end()) return FailedPrecondition("device " + device + " is not in the round");
  const Client& c = it->second;
  if (stage_ <= submitted) return FailedPrecondition("stage has not closed yet");
  if (!Submitted(c, submitted)) {
    return FailedPrecondition("device " + device + " dropped out of the round in " +
                              StageName(submitted));
  }
  const uint32_t me = c.index;
  switch (submitted) {
    case Stage::kAdvertise: {
      auto* nb = r.mutable_neighbours();
      nb->set_my_index(me);
      nb->set_threshold(params_.t);
      nb->set_num_clients(params_.n);
      for (uint32_t v : graph_[me - 1]) {
        auto* p = nb->add_peers();
        p->set_index(v);
        p->set_device_id(ByIndex(v).id);
        *p->mutable_keys() = ByIndex(v).keys;
        p->set_certificate(ByIndex(v).certificate);
      }
      break;
    }
    case Stage::kShareKeys: {
      auto* out = r.mutable_shares();
      for (uint32_t v : graph_[me - 1]) {
        if (!InSet(v, Stage::kShareKeys)) continue;
        for (const auto& s : ByIndex(v).outbox) {
          if (s.to() == me) *out->add_shares() = s;
        }
      }
      break;
    }
    case Stage::kMaskedInput:
      for (uint32_t u : survivors_) r.mutable_survivors()->add_indices(u);
      break;
    case Stage::kConsistency: {
      auto* req = r.mutable_unmask();
      for (uint32_t h : Holders(me)) {
        if (!InSet(h, Stage::kShareKeys)) continue;  // it never sent me shares
        if (InSet(h, Stage::kMaskedInput)) {
          req->add_self_mask_of(h);
        } else {
          req->add_pairwise_of(h);
        }
        if (InSet(h, Stage::kConsistency)) {
          auto* sig = req->add_signatures();
          sig->set_index(h);
          sig->set_signature(ByIndex(h).consistency_signature);
        }
      }
      break;
    }
    case Stage::kUnmask:
      r.set_done(true);
      break;
    default:
      return FailedPrecondition("no response for this stage");
  }
  return r;
}

std::string SecAggServer::Progress() const {
  std::ostringstream os;
  os << "stage " << StageName(stage_);
  if (!by_index_.empty()) os << ", " << params_.ToString();
  for (Stage s : {Stage::kAdvertise, Stage::kShareKeys, Stage::kMaskedInput, Stage::kConsistency,
                  Stage::kUnmask}) {
    size_t n = 0;
    for (const auto& [id, c] : clients_) n += Submitted(c, s) ? 1 : 0;
    os << ", " << StageName(s) << " " << n;
  }
  return os.str();
}

}  // namespace fleet
