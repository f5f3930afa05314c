#include "aggregation/secagg_client.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>

#include "aggregation/quantize.h"
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

}  // namespace

SecAggClient::SecAggClient(Options options, const crypto::SigningKey* signing_key)
    : options_(std::move(options)), signing_key_(signing_key) {}

Status SecAggClient::Begin(Step step) {
  if (next_ != step) {
    return FailedPrecondition("secure aggregation step out of order (round " +
                              std::to_string(options_.round) + ")");
  }
  next_ = static_cast<Step>(static_cast<int>(step) + 1);
  return OkStatus();
}

v1::SecAggKeys SecAggClient::Advertise() {
  (void)Begin(Step::kAdvertise);
  cipher_ = crypto::DhKeyPair::Generate();
  mask_ = crypto::DhKeyPair::Generate();
  v1::SecAggKeys keys;
  keys.set_cipher_public_key(crypto::ToString(cipher_.public_key));
  keys.set_mask_public_key(crypto::ToString(mask_.public_key));
  keys.set_signing_public_key(crypto::ToString(signing_key_->public_key()));
  keys.set_signature(signing_key_->Sign(secagg_wire::KeysMessage(
      options_.job_id, options_.round, options_.device_id, keys.cipher_public_key(),
      keys.mask_public_key())));
  return keys;
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
  if (threshold_ < 2 || threshold_ > holders) {
    return InvalidArgument("threshold " + std::to_string(threshold_) + " is unsafe or unusable "
                           "for " + std::to_string(holders) + " holders");
  }
  if (num_clients_ < options_.config.min_survivors()) {
    return InvalidArgument("only " + std::to_string(num_clients_) + " clients in the round, "
                           "min_survivors is " + std::to_string(options_.config.min_survivors()));
  }
  for (const auto& p : nb.peers()) {
    Peer peer;
    peer.device_id = p.device_id();
    if (p.index() == 0 || p.index() > num_clients_ || p.index() == my_index_ ||
        peers_.count(p.index()) > 0) {
      return InvalidArgument("neighbour index " + std::to_string(p.index()) + " is invalid");
    }
    if (!crypto::FromString(p.keys().cipher_public_key(), &peer.cipher_pk) ||
        !crypto::FromString(p.keys().mask_public_key(), &peer.mask_pk) ||
        !crypto::FromString(p.keys().signing_public_key(), &peer.signing_pk)) {
      return InvalidArgument("neighbour " + std::to_string(p.index()) + " has malformed keys");
    }
    std::string msg = secagg_wire::KeysMessage(options_.job_id, options_.round, p.device_id(),
                                               p.keys().cipher_public_key(),
                                               p.keys().mask_public_key());
    if (!crypto::VerifySignature(peer.signing_pk, msg, p.keys().signature())) {
      return InvalidArgument("neighbour " + std::to_string(p.index()) +
                             " keys carry a bad signature");
    }
    peers_[p.index()] = std::move(peer);
  }
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
  const std::string ctx = secagg_wire::ShareKeyContext(options_.job_id, options_.round);
  v1::SecAggShares out;
  for (size_t i = 0; i < xs.size(); ++i) {
    const uint32_t v = xs[i];
    if (v == my_index_) {
      held_[v] = {crypto::EncodeShare(b_shares[i]), crypto::EncodeShare(s_shares[i])};
      continue;
    }
    Peer& peer = peers_[v];
    ASSIGN_OR_RETURN(peer.share_key, crypto::AgreeKey(cipher_.secret_key, cipher_.public_key,
                                                      peer.cipher_pk, ctx));
    std::string plain = crypto::EncodeShare(b_shares[i]) + crypto::EncodeShare(s_shares[i]);
    Wipe wipe{&plain};
    auto* s = out.add_shares();
    s->set_from(my_index_);
    s->set_to(v);
    s->set_ciphertext(crypto::Seal(
        peer.share_key, plain,
        secagg_wire::ShareAssociatedData(options_.job_id, options_.round, my_index_, v)));
  }
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
        secagg_wire::ShareAssociatedData(options_.job_id, options_.round, s.from(), my_index_));
    if (!plain.ok()) {
      return InvalidArgument("share from client " + std::to_string(s.from()) + ": " +
                             plain.status().message());
    }
    Wipe wipe{&plain.value()};
    if (plain->size() != secagg_wire::kSharePlaintextBytes) {
      return InvalidArgument("share from client " + std::to_string(s.from()) + " has wrong size");
    }
    Held h{plain->substr(0, crypto::kShamirShareBytes),
           plain->substr(crypto::kShamirShareBytes)};
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
  const std::string ctx = secagg_wire::MaskSeedContext(options_.job_id, options_.round);
  std::vector<std::pair<crypto::Secret32, bool>> pair_seeds;  // (seed, add?)
  for (uint32_t v : masked_with_) {
    ASSIGN_OR_RETURN(crypto::Secret32 seed, crypto::AgreeKey(mask_.secret_key, mask_.public_key,
                                                             peers_[v].mask_pk, ctx));
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
  if (survivors_.size() < options_.config.min_survivors()) {
    return FailedPrecondition("refusing to help unmask a sum of " +
                              std::to_string(survivors_.size()) + " inputs (min_survivors " +
                              std::to_string(options_.config.min_survivors()) + ")");
  }
  v1::SecAggConsistency c;
  c.set_signature(signing_key_->Sign(
      secagg_wire::SurvivorsMessage(options_.job_id, options_.round, survivors_)));
  return c;
}

StatusOr<v1::SecAggUnmaskResponse> SecAggClient::OnUnmaskRequest(
    const v1::SecAggUnmaskRequest& req) {
  RETURN_IF_ERROR(Begin(Step::kUnmask));
  auto survived = [&](uint32_t v) {
    return std::binary_search(survivors_.begin(), survivors_.end(), v);
  };
  // At least t holders (this client's neighbourhood) signed the same survivor set.
  const std::string msg = secagg_wire::SurvivorsMessage(options_.job_id, options_.round, survivors_);
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
  std::set<uint32_t> self_of(req.self_mask_of().begin(), req.self_mask_of().end());
  for (uint32_t v : req.pairwise_of()) {
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
  for (auto& [v, h] : held_) {
    sodium_memzero(h.self_mask_share.data(), h.self_mask_share.size());
    sodium_memzero(h.key_share.data(), h.key_share.size());
  }
  held_.clear();
  return out;
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
  *req.mutable_advertise() = client->Advertise();
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
