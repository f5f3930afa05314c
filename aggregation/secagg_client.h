// The client side of SecAgg+: one instance per round attempt, driven step by step by the device's
// round loop (client/). It holds the attempt's ephemeral X25519 keys, its self-mask seed and the
// shares its neighbours sent it, and wipes them when destroyed, however the attempt ends. It
// checks everything the server relays before using it: each neighbour's certificate (chains to
// the device's pinned fleet CA, valid now, a device certificate for the neighbour's id that
// certifies exactly the signing key it advertised), the signature on its keys, that no two parties
// share an id or a key, that the threshold and its neighbour count are what it derives itself
// from the n it is told and the signed task's threat model (never below the task's min_clients),
// share authenticity, the survivor set and, at Unmasking, that the server never asks for both
// shares of one client and never contradicts the signed survivors.
// Not thread-safe; steps must come in protocol order (a step out of order is an error).
#pragma once

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "aggregation/secagg_params.h"
#include "aggregation/secagg_wire.h"
#include "common/status.h"
#include "crypto/keys.h"
#include "crypto/pki.h"
#include "proto/secagg.pb.h"

namespace fleet {

class SecAggClient {
 public:
  struct Options {
    std::string job_id;
    uint32_t round = 0;
    std::string device_id;
    v1::SecAggTaskConfig config;  // of the task: its attempt_nonce names this attempt
    size_t vector_length = 0;     // L ring elements
    // Checks neighbours' certificates against the device's pinned CA; it must outlive this
    // object. Null only on a device running --insecure: then neighbours' keys are taken on the
    // coordinator's word.
    const crypto::CertificateVerifier* verifier = nullptr;
    int64_t now = 0;  // Unix seconds on the device's clock: certificates must be valid then
  };
  // `signing_key` is the device's long-term key (the one its certificate certifies); it must
  // outlive this object.
  SecAggClient(Options options, const crypto::SigningKey* signing_key);
  ~SecAggClient();
  SecAggClient(const SecAggClient&) = delete;
  SecAggClient& operator=(const SecAggClient&) = delete;

  // Fails when the task carries no 32-byte attempt nonce or there is no signing key.
  StatusOr<v1::SecAggKeys> Advertise();
  Status OnNeighbours(const v1::SecAggNeighbours& neighbours);
  StatusOr<v1::SecAggShares> ShareKeys();
  Status OnShares(const v1::SecAggShares& shares);
  // `words`: QuantizeToWords output for this round's modulus b (the unmasked update, wiped
  // here if it cannot be masked). Masks it in place and returns it: the upload.
  StatusOr<std::string> MaskInput(std::string words);
  // The same for QuantizeUpdate output (elements < 2^b), packed first.
  StatusOr<std::string> MaskInput(const std::vector<uint64_t>& values);
  StatusOr<v1::SecAggConsistency> OnSurvivors(const v1::SecAggSurvivors& survivors);
  StatusOr<v1::SecAggUnmaskResponse> OnUnmaskRequest(const v1::SecAggUnmaskRequest& request);

  uint32_t index() const { return my_index_; }

 private:
  enum class Step {
    kAdvertise,
    kNeighbours,
    kShareKeys,
    kShares,
    kMask,
    kSurvivors,
    kUnmask,
    kDone,
    kFailed  // a step failed: every later call fails too
  };
  Status Begin(Step step);  // the step may run now; until Advance(step) the client is failed
  void Advance(Step step);  // `step` succeeded

  struct Peer {
    std::string device_id;
    crypto::Bytes32 cipher_pk{}, mask_pk{}, signing_pk{};
    crypto::Secret32 share_key;  // from cipher_pk, agreed once in ShareKeys, used both ways
  };
  // The shares this client holds of one owner's secrets (encoded); wiped when destroyed or
  // replaced.
  struct Held {
    std::string self_mask_share;
    std::string key_share;
    Held() = default;
    Held(std::string self_mask, std::string key);
    Held(const Held&) = delete;
    Held& operator=(const Held&) = delete;
    Held(Held&& other) noexcept;
    Held& operator=(Held&& other) noexcept;  // swaps: `other` wipes what was here
    ~Held();
  };
  // Checks one relayed neighbour (certificate, signature, ids); fills `peer`.
  Status CheckPeer(const v1::SecAggPeer& p, Peer* peer) const;
  // The neighbour set names every device and every key once (this client's own included).
  Status CheckDistinct() const;
  std::string PeerName(uint32_t index, const std::string& device_id) const;
  // The signed task's min_clients, and never below kSecAggMinClients.
  uint32_t MinClients() const {
    return std::max(options_.config.min_survivors(), kSecAggMinClients);
  }
  secagg_wire::Party Me() const { return {my_index_, options_.device_id}; }

  const Options options_;
  const secagg_wire::Attempt attempt_;
  const crypto::SigningKey* const signing_key_;
  Step next_ = Step::kAdvertise;
  crypto::DhKeyPair cipher_, mask_;
  crypto::Secret32 self_seed_;
  uint32_t my_index_ = 0, threshold_ = 0, num_clients_ = 0;
  std::map<uint32_t, Peer> peers_;
  std::map<uint32_t, Held> held_;     // by owner index, including this client's own
  std::set<uint32_t> masked_with_;    // neighbours whose shares arrived (pairwise masks)
  std::vector<uint32_t> survivors_;
};

// The attempt nonces a device took part with, the newest `capacity` of them: a coordinator that
// reuses one (to replay messages of one attempt in another) is refused. Kept in memory only.
// Not thread-safe.
class AttemptNonces {
 public:
  explicit AttemptNonces(size_t capacity = 4096) : capacity_(capacity) {}
  // OK, and remembered, for a nonce not seen before; InvalidArgument for a repeated one. A
  // malformed nonce is let through: SecAggClient::Advertise refuses it with the reason.
  Status Use(const std::string& nonce);

 private:
  const size_t capacity_;
  std::set<std::string> seen_;
  std::deque<std::string> order_;  // oldest first
};

// How a client's steps reach the server: `step` sends one SecAggRequest (the caller fills in the
// ids) and returns the server's answer when that stage closes; `send_masked` delivers the masked
// input (Device.PushUpdate); `input` produces the quantized update as QuantizeToWords packs it,
// after ShareKeys, which is where local training happens.
struct SecAggTransport {
  std::function<StatusOr<v1::SecAggResponse>(v1::SecAggRequest)> step;
  std::function<Status(const std::string& masked)> send_masked;
  std::function<StatusOr<std::string>()> input;
};

// Runs one client through all five stages. An abort from the server, or anything the client
// refuses, ends the round with an error naming it.
Status RunSecAggClient(SecAggClient* client, const SecAggTransport& transport);

}  // namespace fleet
