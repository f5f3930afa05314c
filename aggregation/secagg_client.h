// The client side of SecAgg+: one instance per (job, round), driven step by step by the device's
// round loop (client/). It holds the round's ephemeral X25519 keys, its self-mask seed and the
// shares its neighbours sent it, and wipes them when destroyed. It checks everything the server
// relays: peer signatures, share authenticity, the survivor set and, at Unmasking, that the
// server never asks for both shares of one client and never contradicts the signed survivors.
// Not thread-safe; steps must come in protocol order (a step out of order is an error).
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "crypto/keys.h"
#include "proto/secagg.pb.h"

namespace fleet {

class SecAggClient {
 public:
  struct Options {
    std::string job_id;
    uint32_t round = 0;
    std::string device_id;
    v1::SecAggTaskConfig config;
    size_t vector_length = 0;     // L ring elements
  };
  // `signing_key` is the device's long-term key; it must outlive this object.
  SecAggClient(Options options, const crypto::SigningKey* signing_key);

  v1::SecAggKeys Advertise();
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
  enum class Step { kAdvertise, kNeighbours, kShareKeys, kShares, kMask, kSurvivors, kUnmask, kDone };
  Status Begin(Step step);

  struct Peer {
    std::string device_id;
    crypto::Bytes32 cipher_pk{}, mask_pk{}, signing_pk{};
    crypto::Secret32 share_key;  // from cipher_pk, agreed once in ShareKeys, used both ways
  };
  struct Held {                  // the shares this client holds of one owner's secrets
    std::string self_mask_share;
    std::string key_share;
  };

  const Options options_;
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
