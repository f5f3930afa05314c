// The SecAgg+ server state machine (Bell et al. CCS 2020 over Bonawitz et al. CCS 2017):
//
//   AdvertiseKeys -> ShareKeys -> MaskedInputCollection -> ConsistencyCheck -> Unmasking
//
// The server routes signed keys (with each device's certificate, which certifies its id and
// signing key) and encrypted shares between neighbours, adds masked inputs to
// one running sum as they arrive, and at the end removes the masks it can reconstruct: survivors'
// self masks and dropouts' pairwise masks, never both for one client. It learns the sum of the
// survivors' inputs and nothing else. Memory is O(L + n * k): one accumulator plus the relayed
// keys and shares; no client's vector is ever stored.
//
// Pure and deterministic given the injected graph seed: no clock, no threads, no I/O. Time is
// the caller's business: it decides when a stage closes (everyone answered, or a deadline) and
// calls CloseStage(); whoever has not submitted by then has dropped out. Not thread-safe: the
// coordinator serializes calls.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "aggregation/secagg_params.h"
#include "aggregation/secagg_wire.h"
#include "common/status.h"
#include "crypto/secret.h"
#include "crypto/shamir.h"
#include "proto/secagg.pb.h"

namespace fleet {

class SecAggServer {
 public:
  enum class Stage { kAdvertise, kShareKeys, kMaskedInput, kConsistency, kUnmask, kDone, kAborted };
  static const char* StageName(Stage s);

  struct Options {
    std::string job_id;
    uint32_t round = 0;
    std::string attempt_nonce;      // the tasks' SecAggTaskConfig.attempt_nonce (32 bytes)
    size_t vector_length = 0;       // L ring elements per client
    uint32_t modulus_bits = 32;     // 32 or 64
    uint32_t min_survivors = 3;     // fewer masked inputs than this: abort, unmask nothing
    SecAggThreatModel threat;
    crypto::Secret32 graph_seed;    // randomness of the neighbour graph
  };

  // A selected device: the Ed25519 key it joined with and the certificate (DER) that certifies
  // it, relayed to its neighbours (empty only for a coordinator running --insecure).
  struct Device {
    crypto::Bytes32 signing_key{};
    std::string certificate;
  };
  static StatusOr<std::unique_ptr<SecAggServer>> Create(Options options,
                                                        std::map<std::string, Device> devices);

  Stage stage() const { return stage_; }
  uint32_t round() const { return options_.round; }
  const std::string& abort_reason() const { return abort_reason_; }
  const SecAggGraphParams& params() const { return params_; }

  // Stage inputs. Each fails with a message naming the problem (wrong stage, replay, bad
  // signature, malformed share, wrong length) and leaves the state unchanged.
  Status Advertise(const std::string& device, const v1::SecAggKeys& keys);
  Status ShareKeys(const std::string& device, const v1::SecAggShares& shares);
  Status MaskedInput(const std::string& device, std::string_view packed_words);
  Status Consistency(const std::string& device, const v1::SecAggConsistency& consistency);
  Status Unmask(const std::string& device, const v1::SecAggUnmaskResponse& response);

  // Devices the open stage still waits for.
  std::vector<std::string> Pending() const;
  // Ends the open stage: devices that did not submit are dropouts. Aborts (nothing unmasked)
  // when too few remain; after Unmasking, reconstructs and removes the masks.
  void CloseStage();
  void Abort(const std::string& reason);

  // The answer to `device`'s submission in `submitted` (the next stage's input), once that
  // stage has closed. FAILED_PRECONDITION when the device dropped out before it.
  StatusOr<v1::SecAggResponse> ResponseFor(const std::string& device, Stage submitted) const;

  // After kDone: sum of the survivors' inputs, each element < 2^modulus_bits.
  const std::vector<uint64_t>& sum() const { return sum_; }
  // Clients whose masked input is in the sum (|U3|), and how many reached each stage.
  size_t survivors() const { return survivors_.size(); }
  // Their device ids (sorted by index), once MaskedInputCollection has closed.
  std::vector<std::string> SurvivorIds() const;
  std::string Progress() const;

 private:
  struct Client {
    std::string id;
    crypto::Bytes32 signing_key{};
    std::string certificate;
    uint32_t index = 0;                      // 1-based, assigned when AdvertiseKeys closes
    v1::SecAggKeys keys;
    Stage reached = Stage::kAdvertise;       // last stage whose input it submitted, +1
    std::vector<v1::SecAggEncryptedShare> outbox;  // its ciphertexts, to each neighbour
    std::string consistency_signature;
  };

  SecAggServer(Options options, std::map<std::string, Client> clients);
  Status Expect(const std::string& device, Stage stage, Client** client);
  bool Submitted(const Client& c, Stage stage) const { return c.reached > stage; }
  bool InSet(uint32_t index, Stage stage) const;   // submitted `stage`'s input
  const Client& ByIndex(uint32_t index) const { return *by_index_[index - 1]; }
  // Every client whose mask must come off keeps >= t holders alive among those that submitted
  // `stage`; otherwise aborts with the reason.
  bool CheckRecoverable(Stage stage);
  std::vector<uint32_t> Holders(uint32_t index) const;
  void FinishUnmask();
  template <typename Word>
  Word* SumData();
  template <typename Word>
  void Accumulate(std::string_view packed);
  template <typename Word>
  void RemoveMask(const crypto::Secret32& seed, bool add);

  const Options options_;
  const secagg_wire::Attempt attempt_;
  std::map<std::string, Client> clients_;
  // Every X25519 key and every signing key advertised in this attempt, and whose it is: no two
  // devices may share one.
  std::map<std::string, std::string> dh_keys_, signing_keys_;
  std::vector<Client*> by_index_;
  std::vector<std::vector<uint32_t>> graph_;
  SecAggGraphParams params_;
  Stage stage_ = Stage::kAdvertise;
  std::string abort_reason_;
  std::vector<uint32_t> sum32_;           // the running sum when modulus_bits == 32
  std::vector<uint64_t> sum_;             // ... when 64; after kDone, the result either way
  std::vector<uint32_t> survivors_;        // U3, sorted
  // Revealed shares by owner index: self-mask shares (survivors) and mask-key shares (dropouts).
  std::map<uint32_t, std::vector<crypto::ShamirShare>> self_shares_, key_shares_;
};

}  // namespace fleet
