#include "aggregation/secagg_client.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>

#include "aggregation/quantize.h"
#include "aggregation/secagg_params.h"
#include "aggregation/secagg_wire.h"
#include "crypto/prg.h"
#include "crypto/shamir.h"

namespace fleet {
namespace {

// Wipes a string holding secret material before it is freed.
struct Wipe {
  std::string* s;
  ~Wipe() { sodium_memzero(s->data(), s->size()); }
};

void WipeString(std::string* s) { sodium_memzero(s->data(), s->size()); }

// The plaintext of one encrypted share, built in a buffer sized up front so that no reallocation
// leaves a copy of a share behind; the encodings on the way are wiped too.
std::string SharePlaintext(const crypto::ShamirShare& self_mask, const crypto::ShamirShare& key) {
  std::string out;
  out.reserve(secagg_wire::kSharePlaintextBytes);
  for (const crypto::ShamirShare* share : {&self_mask, &key}) {
    std::string e = crypto::EncodeShare(*share);
    out += e;
    WipeString(&e);
  }
  return out;
}

}  // namespace

SecAggClient::Held::Held(std::string self_mask, std::string key)
    : self_mask_share(std::move(self_mask)), key_share(std::move(key)) {}
SecAggClient::Held::Held(Held&& other) noexcept
    : self_mask_share(std::move(other.self_mask_share)), key_share(std::move(other.key_share)) {}
SecAggClient::Held& SecAggClient::Held::operator=(Held&& other) noexcept {
  std::swap(self_mask_share, other.self_mask_share);
  std::swap(key_share, other.key_share);
  return *this;
}
SecAggClient::Held::~Held() {
  WipeString(&self_mask_share);
  WipeString(&key_share);
}

SecAggClient::SecAggClient(Options options, const crypto::SigningKey* signing_key)
    : options_(std::move(options)),
      attempt_{options_.job_id, options_.round, options_.config.attempt_nonce()},
      signing_key_(signing_key) {}

// The members wipe themselves (Secret<>, ShamirShare, Held); spelled out so that it is visibly so.
SecAggClient::~SecAggClient() { held_.clear(); }

Status SecAggClient::Begin(Step step) {
  if (next_ == Step::kFailed) {
    return FailedPrecondition("secure aggregation round " + std::to_string(options_.round) +
                              ": an earlier step failed; this client takes no further part");
  }
  if (next_ != step) {
    return FailedPrecondition("secure aggregation step out of order (round " +
                              std::to_string(options_.round) + ")");
  }
  next_ = Step::kFailed;  // until the step succeeds (Advance)
  return OkStatus();
}

void SecAggClient::Advance(Step step) { next_ = static_cast<Step>(static_cast<int>(step) + 1); }

std::string SecAggClient::PeerName(uint32_t index, const std::string& device_id) const {
  return "neighbour " + std::to_string(index) + " (device '" + device_id.substr(0, 128) + "')";
}

StatusOr<v1::SecAggKeys> SecAggClient::Advertise() {
  RETURN_IF_ERROR(Begin(Step::kAdvertise));
  if (attempt_.nonce.size() != secagg_wire::kAttemptNonceBytes) {
    return InvalidArgument("the task's secure-aggregation config carries no " +
                           std::to_string(secagg_wire::kAttemptNonceBytes) +
                           "-byte attempt nonce (got " + std::to_string(attempt_.nonce.size()) +
                           "): refusing a round whose messages could be replayed across attempts");
  }
  if (signing_key_ == nullptr) {
    return FailedPrecondition("this device has no secure-aggregation signing key");
  }
  cipher_ = crypto::DhKeyPair::Generate();
  mask_ = crypto::DhKeyPair::Generate();
  v1::SecAggKeys keys;
  keys.set_cipher_public_key(crypto::ToString(cipher_.public_key));
  keys.set_mask_public_key(crypto::ToString(mask_.public_key));
  keys.set_signing_public_key(crypto::ToString(signing_key_->public_key()));
  keys.set_signature(signing_key_->Sign(secagg_wire::KeysMessage(
      attempt_, options_.device_id, keys.cipher_public_key(), keys.mask_public_key())));
  Advance(Step::kAdvertise);
  return keys;
}

Status SecAggClient::CheckPeer(const v1::SecAggPeer& p, Peer* peer) const {
  const std::string name = PeerName(p.index(), p.device_id());
  peer->device_id = p.device_id();
  if (p.device_id().empty()) return InvalidArgument(name + " has no device id");
  if (!crypto::FromString(p.keys().cipher_public_key(), &peer->cipher_pk) ||
      !crypto::FromString(p.keys().mask_public_key(), &peer->mask_pk) ||
      !crypto::FromString(p.keys().signing_public_key(), &peer->signing_pk)) {
    return InvalidArgument(name + " has malformed keys");
  }
  if (options_.verifier != nullptr) {
    // The coordinator relays keys; only the fleet CA can vouch for whose they are.
    if (p.certificate().empty()) {
      return InvalidArgument(name +
                             " comes without a certificate: refusing keys the fleet CA "
                             "does not vouch for");
    }
    StatusOr<crypto::CertInfo> cert = options_.verifier->Verify(p.certificate(), options_.now);
    if (!cert.ok()) {
      return Status(cert.status().code(),
                    name +
                        ": certificate does not chain to this device's fleet CA or is not "
                        "valid now: " +
                        cert.status().message());
    }
    if (cert->role != crypto::CertRole::kDevice || cert->id != p.device_id()) {
      return InvalidArgument(name + ": certificate " + cert->serial + " is for " +
                             (cert->role == crypto::CertRole::kDevice ? "device" : "a non-device") +
                             " '" + cert->id.substr(0, 128) + "', not for this neighbour");
    }
    if (cert->secagg_public_key.empty()) {
      return InvalidArgument(name + ": certificate " + cert->serial +
                             " certifies no secure-aggregation signing key");
    }
    if (cert->secagg_public_key != p.keys().signing_public_key()) {
      return InvalidArgument(name + ": advertised signing key is not the one its certificate " +
                             cert->serial + " certifies");
    }
  }
  std::string msg = secagg_wire::KeysMessage(attempt_, p.device_id(), p.keys().cipher_public_key(),
                                             p.keys().mask_public_key());
  if (!crypto::VerifySignature(peer->signing_pk, msg, p.keys().signature())) {
    return InvalidArgument(name +
                           ": keys carry a bad signature (forged, or from another job, "
                           "round or attempt)");
  }
  return OkStatus();
}

Status SecAggClient::CheckDistinct() const {
  std::map<std::string, std::string> ids;  // device id -> who
  std::map<crypto::Bytes32, std::string> dh, signing;
  auto add = [](auto* seen, const auto& key, const std::string& who) -> Status {
    auto [it, fresh] = seen->emplace(key, who);
    if (!fresh) {
      return InvalidArgument("duplicate in the neighbour set: " + who + " and " + it->second +
                             " share a key or id; refusing the round");
    }
    return OkStatus();
  };
  const std::string me = "this device (index " + std::to_string(my_index_) + ")";
  RETURN_IF_ERROR(add(&ids, options_.device_id, me + " id"));
  RETURN_IF_ERROR(add(&dh, cipher_.public_key, me + " cipher key"));
  RETURN_IF_ERROR(add(&dh, mask_.public_key, me + " mask key"));
  RETURN_IF_ERROR(add(&signing, signing_key_->public_key(), me + " signing key"));
  for (const auto& [v, peer] : peers_) {
    const std::string name = PeerName(v, peer.device_id);
    RETURN_IF_ERROR(add(&ids, peer.device_id, name + " id"));
    RETURN_IF_ERROR(add(&dh, peer.cipher_pk, name + " cipher key"));
    RETURN_IF_ERROR(add(&dh, peer.mask_pk, name + " mask key"));
    RETURN_IF_ERROR(add(&signing, peer.signing_pk, name + " signing key"));
  }
  return OkStatus();
}

Status SecAggClient::OnNeighbours(const v1::SecAggNeighbours& nb) {
  RETURN_IF_ERROR(Begin(Step::kNeighbours));
  my_index_ = nb.my_index();
  threshold_ = nb.threshold();
  num_clients_ = nb.num_clients();
  const size_t holders = static_cast<size_t>(nb.peers_size()) + 1;
  if (my_index_ == 0 || my_index_ > num_clients_ || nb.peers_size() == 0 ||
      holders > num_clients_) {
    return InvalidArgument("neighbour list is malformed (index or size out of range)");
  }
  // The floor is the job's min_clients from the signed task, never a number only the server
  // states.
  const uint32_t min_clients = MinClients();
  if (num_clients_ < min_clients) {
    return InvalidArgument("only " + std::to_string(num_clients_) +
                           " clients in the round, the signed task's min_clients is " +
                           std::to_string(min_clients));
  }
  // (k, t) as the coordinator derives them, from the n it names and the threat model of the
  // signed task. A lower threshold, or more or fewer neighbours than the graph gives, would let
  // a relay that shows two groups of holders different survivor sets collect both shares of one
  // client from them (docs/security.md, "Parameters").
  StatusOr<SecAggGraphParams> want =
      ChooseGraphParams(num_clients_, ThreatModelOf(options_.config));
  if (!want.ok()) {
    return Status(want.status().code(),
                  "refusing the round: the signed threat model admits no parameters for the " +
                      std::to_string(num_clients_) +
                      " clients the coordinator names: " + want.status().message());
  }
  if (static_cast<uint32_t>(nb.peers_size()) != want->k) {
    return InvalidArgument("the coordinator sent " + std::to_string(nb.peers_size()) +
                           " neighbours, but the signed threat model gives " + want->ToString() +
                           ": refusing the round");
  }
  if (threshold_ < want->t || threshold_ > holders) {
    return InvalidArgument("threshold " + std::to_string(threshold_) +
                           " is below what the signed threat model gives (" + want->ToString() +
                           ") or above the " + std::to_string(holders) +
                           " holders: refusing the round");
  }
  for (const auto& p : nb.peers()) {
    if (p.index() == 0 || p.index() > num_clients_ || p.index() == my_index_ ||
        peers_.count(p.index()) > 0) {
      return InvalidArgument("neighbour index " + std::to_string(p.index()) + " is invalid");
    }
    Peer peer;
    RETURN_IF_ERROR(CheckPeer(p, &peer));
    peers_[p.index()] = std::move(peer);
  }
  RETURN_IF_ERROR(CheckDistinct());
  Advance(Step::kNeighbours);
  return OkStatus();
}

StatusOr<v1::SecAggShares> SecAggClient::ShareKeys() {
  RETURN_IF_ERROR(Begin(Step::kShareKeys));
  randombytes_buf(self_seed_.data(), self_seed_.size());
  std::vector<uint32_t> xs;
  for (const auto& [v, peer] : peers_) xs.push_back(v);
  xs.push_back(my_index_);
  ASSIGN_OR_RETURN(std::vector<crypto::ShamirShare> b_shares,
                   crypto::ShamirSplit(self_seed_, xs, threshold_));
  ASSIGN_OR_RETURN(std::vector<crypto::ShamirShare> s_shares,
                   crypto::ShamirSplit(mask_.secret_key, xs, threshold_));
  v1::SecAggShares out;
  for (size_t i = 0; i < xs.size(); ++i) {
    const uint32_t v = xs[i];
    if (v == my_index_) {
      held_[v] = Held(crypto::EncodeShare(b_shares[i]), crypto::EncodeShare(s_shares[i]));
      continue;
    }
    Peer& peer = peers_[v];
    const secagg_wire::Party them{v, peer.device_id};
    ASSIGN_OR_RETURN(peer.share_key,
                     crypto::AgreeKey(cipher_.secret_key, cipher_.public_key, peer.cipher_pk,
                                      secagg_wire::ShareKeyContext(attempt_, Me(), them)));
    std::string plain = SharePlaintext(b_shares[i], s_shares[i]);
    Wipe wipe{&plain};
    auto* s = out.add_shares();
    s->set_from(my_index_);
    s->set_to(v);
    s->set_ciphertext(crypto::Seal(peer.share_key, plain,
                                   secagg_wire::ShareAssociatedData(attempt_, Me(), them)));
  }
  Advance(Step::kShareKeys);
  return out;
}

Status SecAggClient::OnShares(const v1::SecAggShares& shares) {
  RETURN_IF_ERROR(Begin(Step::kShares));
  for (const auto& s : shares.shares()) {
    auto peer = peers_.find(s.from());
    if (peer == peers_.end() || s.to() != my_index_ || masked_with_.count(s.from()) > 0) {
      return InvalidArgument("relayed share from " + std::to_string(s.from()) + " to " +
                             std::to_string(s.to()) + " is not for this client or repeated");
    }
    StatusOr<std::string> plain = crypto::Open(
        peer->second.share_key, s.ciphertext(),
        secagg_wire::ShareAssociatedData(attempt_, {s.from(), peer->second.device_id}, Me()));
    if (!plain.ok()) {
      return InvalidArgument("share from client " + std::to_string(s.from()) + ": " +
                             plain.status().message());
    }
    Wipe wipe{&plain.value()};
    if (plain->size() != secagg_wire::kSharePlaintextBytes) {
      return InvalidArgument("share from client " + std::to_string(s.from()) + " has wrong size");
    }
    Held h(plain->substr(0, crypto::kShamirShareBytes), plain->substr(crypto::kShamirShareBytes));
    for (const std::string* enc : {&h.self_mask_share, &h.key_share}) {
      StatusOr<crypto::ShamirShare> d = crypto::DecodeShare(*enc);
      if (!d.ok() || d->x != my_index_) {
        return InvalidArgument("share from client " + std::to_string(s.from()) + " is malformed");
      }
    }
    held_[s.from()] = std::move(h);
    masked_with_.insert(s.from());
  }
  if (masked_with_.size() + 1 < threshold_) {
    return FailedPrecondition("only " + std::to_string(masked_with_.size()) +
                              " neighbours sent shares, below the threshold");
  }
  Advance(Step::kShares);
  return OkStatus();
}

StatusOr<std::string> SecAggClient::MaskInput(std::string words) {
  Wipe wipe_unless_masked{&words};  // moved-from on success: wipes nothing
  RETURN_IF_ERROR(Begin(Step::kMask));
  const uint32_t bits = options_.config.modulus_bits();
  if (bits != 32 && bits != 64) return InvalidArgument("modulus_bits must be 32 or 64");
  if (words.size() != options_.vector_length * (bits / 8)) {
    return InvalidArgument("input has " + std::to_string(words.size() / (bits / 8)) +
                           " elements, expected " + std::to_string(options_.vector_length));
  }
  std::vector<std::pair<crypto::Secret32, bool>> pair_seeds;  // (seed, add?)
  pair_seeds.reserve(masked_with_.size());
  for (uint32_t v : masked_with_) {
    const Peer& peer = peers_[v];
    ASSIGN_OR_RETURN(
        crypto::Secret32 seed,
        crypto::AgreeKey(mask_.secret_key, mask_.public_key, peer.mask_pk,
                         secagg_wire::MaskSeedContext(attempt_, Me(), {v, peer.device_id})));
    pair_seeds.emplace_back(seed, v > my_index_);
  }
  // In place: the packed little-endian words are the ring elements (the buffer comes from
  // operator new, so it is suitably aligned for either word type).
  auto mask = [&](auto* w) {
    using Word = std::remove_pointer_t<decltype(w)>;
    crypto::ApplyMask<Word>(self_seed_, crypto::MaskSign::kAdd, w, options_.vector_length);
    for (const auto& [seed, add] : pair_seeds) {
      crypto::ApplyMask<Word>(seed, add ? crypto::MaskSign::kAdd : crypto::MaskSign::kSubtract, w,
                              options_.vector_length);
    }
  };
  if (bits == 32) {
    mask(reinterpret_cast<uint32_t*>(words.data()));
  } else {
    mask(reinterpret_cast<uint64_t*>(words.data()));
  }
  Advance(Step::kMask);
  return words;
}

StatusOr<std::string> SecAggClient::MaskInput(const std::vector<uint64_t>& values) {
  ASSIGN_OR_RETURN(std::string words, PackWords(values, options_.config.modulus_bits()));
  return MaskInput(std::move(words));
}

StatusOr<v1::SecAggConsistency> SecAggClient::OnSurvivors(const v1::SecAggSurvivors& survivors) {
  RETURN_IF_ERROR(Begin(Step::kSurvivors));
  survivors_.assign(survivors.indices().begin(), survivors.indices().end());
  if (!std::is_sorted(survivors_.begin(), survivors_.end()) ||
      std::adjacent_find(survivors_.begin(), survivors_.end()) != survivors_.end() ||
      survivors_.empty() || survivors_.front() == 0 || survivors_.back() > num_clients_ ||
      !std::binary_search(survivors_.begin(), survivors_.end(), my_index_)) {
    return InvalidArgument("survivor set is malformed or omits this client");
  }
  if (survivors_.size() < MinClients()) {
    return FailedPrecondition(
        "refusing to help unmask a sum of " + std::to_string(survivors_.size()) +
        " inputs (the signed task's min_clients is " + std::to_string(MinClients()) + ")");
  }
  v1::SecAggConsistency c;
  c.set_signature(signing_key_->Sign(secagg_wire::SurvivorsMessage(attempt_, survivors_)));
  Advance(Step::kSurvivors);
  return c;
}

StatusOr<v1::SecAggUnmaskResponse> SecAggClient::OnUnmaskRequest(
    const v1::SecAggUnmaskRequest& req) {
  RETURN_IF_ERROR(Begin(Step::kUnmask));
  auto survived = [&](uint32_t v) {
    return std::binary_search(survivors_.begin(), survivors_.end(), v);
  };
  // At least t holders (this client's neighbourhood) signed the same survivor set.
  const std::string msg = secagg_wire::SurvivorsMessage(attempt_, survivors_);
  std::set<uint32_t> signers;
  for (const auto& s : req.signatures()) {
    const crypto::Bytes32* pk = nullptr;
    if (s.index() == my_index_) pk = &signing_key_->public_key();
    auto peer = peers_.find(s.index());
    if (peer != peers_.end()) pk = &peer->second.signing_pk;
    if (pk == nullptr || !crypto::VerifySignature(*pk, msg, s.signature())) {
      return InvalidArgument("consistency signature of client " + std::to_string(s.index()) +
                             " does not verify: refusing to unmask");
    }
    signers.insert(s.index());
  }
  if (signers.size() < threshold_) {
    return FailedPrecondition("only " + std::to_string(signers.size()) +
                              " neighbours signed the survivor set, threshold is " +
                              std::to_string(threshold_) + ": refusing to unmask");
  }
  auto twice = [](uint32_t v) {
    return InvalidArgument("the unmask request names client " + std::to_string(v) +
                           " twice: refusing a malformed request");
  };
  std::set<uint32_t> self_of, pairwise;
  for (uint32_t v : req.self_mask_of()) {
    if (!self_of.insert(v).second) return twice(v);
  }
  for (uint32_t v : req.pairwise_of()) {
    if (!pairwise.insert(v).second) return twice(v);
    if (self_of.count(v) > 0) {
      return InvalidArgument("asked for both the self-mask share and the mask-key share of client " +
                             std::to_string(v) + ": refusing (that would unmask its input)");
    }
  }
  v1::SecAggUnmaskResponse out;
  for (uint32_t v : req.self_mask_of()) {
    if (!survived(v) || held_.count(v) == 0) {
      return InvalidArgument("asked for the self-mask share of client " + std::to_string(v) +
                             ", which is not a signed survivor this client holds shares of");
    }
    auto* r = out.add_shares();
    r->set_owner(v);
    r->set_self_mask(true);
    r->set_share(held_[v].self_mask_share);
  }
  for (uint32_t v : req.pairwise_of()) {
    if (survived(v) || held_.count(v) == 0 || v == my_index_) {
      return InvalidArgument("asked for the mask-key share of client " + std::to_string(v) +
                             ", which the signed survivor set lists as alive");
    }
    auto* r = out.add_shares();
    r->set_owner(v);
    r->set_self_mask(false);
    r->set_share(held_[v].key_share);
  }
  held_.clear();  // each Held wipes itself
  Advance(Step::kUnmask);
  return out;
}

Status AttemptNonces::Use(const std::string& nonce) {
  if (nonce.size() != secagg_wire::kAttemptNonceBytes) return OkStatus();
  if (!seen_.insert(nonce).second) {
    return InvalidArgument("the coordinator reused the attempt nonce of an earlier secure round "
                           "this device took part in: refusing (its messages could be replayed)");
  }
  order_.push_back(nonce);
  if (order_.size() > capacity_) {
    seen_.erase(order_.front());
    order_.pop_front();
  }
  return OkStatus();
}

Status RunSecAggClient(SecAggClient* client, const SecAggTransport& transport) {
  auto step = [&](const v1::SecAggRequest& req) -> StatusOr<v1::SecAggResponse> {
    ASSIGN_OR_RETURN(v1::SecAggResponse resp, transport.step(req));
    if (resp.has_abort_reason()) {
      return FailedPrecondition("secure aggregation round aborted by the coordinator: " +
                                resp.abort_reason());
    }
    return resp;
  };
  v1::SecAggRequest req;
  ASSIGN_OR_RETURN(*req.mutable_advertise(), client->Advertise());
  ASSIGN_OR_RETURN(v1::SecAggResponse resp, step(req));
  RETURN_IF_ERROR(client->OnNeighbours(resp.neighbours()));
  ASSIGN_OR_RETURN(*req.mutable_share_keys(), client->ShareKeys());
  ASSIGN_OR_RETURN(resp, step(req));
  RETURN_IF_ERROR(client->OnShares(resp.shares()));
  {
    ASSIGN_OR_RETURN(std::string words, transport.input());
    ASSIGN_OR_RETURN(std::string masked, client->MaskInput(std::move(words)));
    RETURN_IF_ERROR(transport.send_masked(masked));
  }
  req.set_await_survivors(true);
  ASSIGN_OR_RETURN(resp, step(req));
  ASSIGN_OR_RETURN(*req.mutable_consistency(), client->OnSurvivors(resp.survivors()));
  ASSIGN_OR_RETURN(resp, step(req));
  ASSIGN_OR_RETURN(*req.mutable_unmask(), client->OnUnmaskRequest(resp.unmask()));
  return step(req).status();
}

}  // namespace fleet
