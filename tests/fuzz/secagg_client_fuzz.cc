// Fuzz target: every SecAgg+ message a device takes from the server (the relayed neighbour list
// with each neighbour's keys and certificate, the relayed encrypted shares, the survivor set, the
// Unmasking request with the neighbours' consistency signatures), in a real round of kDevices
// devices (secagg_round.h) where the fuzzer's bytes replace or alter the server's answer to one
// device at one stage: a malicious coordinator. Input layout: secagg_round.h PlanFrom.
//
// Checks beyond "no crash", on the tampered device, which are what keeps its input private:
// every neighbour it accepted has a certificate from the fleet CA for that device id that
// certifies the signing key it advertised; it reveals shares only after signing a survivor set;
// it never reveals the mask-key share of a client it signed as a survivor, nor the self-mask
// share of one it did not, nor two shares of one client.
#include <set>

#include "tests/fuzz/secagg_round.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fleet;
  using namespace fleet::fuzz;
  Input in(data, size);
  const Plan plan = PlanFrom(&in, /*to_client=*/true);
  const Outcome out = RunRound(plan);
  const World& w = World::Get();
  if (out.neighbours) {
    for (const v1::SecAggPeer& p : out.neighbours->peers()) {
      StatusOr<crypto::CertInfo> cert = w.verifier->Verify(p.certificate(), kNow);
      FUZZ_CHECK(cert.ok(), "accepted neighbour %u without a valid certificate: %s", p.index(),
                 cert.status().message().c_str());
      FUZZ_CHECK(cert->role == crypto::CertRole::kDevice && cert->id == p.device_id(),
                 "accepted neighbour %u whose certificate is for another id", p.index());
      FUZZ_CHECK(cert->secagg_public_key == p.keys().signing_public_key(),
                 "accepted neighbour %u with a signing key its certificate does not certify",
                 p.index());
    }
  }
  if (!out.revealed) return 0;
  FUZZ_CHECK(out.signed_survivors.has_value(), "revealed shares without signing survivors");
  const std::set<uint32_t> survivors(out.signed_survivors->begin(), out.signed_survivors->end());
  std::set<uint32_t> owners;
  for (const v1::SecAggRevealedShare& s : out.revealed->shares()) {
    FUZZ_CHECK(owners.insert(s.owner()).second, "revealed two shares of client %u", s.owner());
    const bool survivor = survivors.count(s.owner()) > 0;
    FUZZ_CHECK(
        s.self_mask() == survivor, "revealed the %s share of client %u, which it signed as %s",
        s.self_mask() ? "self-mask" : "mask-key", s.owner(), survivor ? "a survivor" : "a dropout");
    FUZZ_CHECK(s.self_mask() || s.owner() != out.party_index, "revealed its own mask-key share");
  }
  return 0;
}
