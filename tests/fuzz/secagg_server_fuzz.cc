// Fuzz target: every SecAgg+ message the server takes from a device (AdvertiseKeys keys,
// ShareKeys encrypted shares, the masked input, the consistency signature, the Unmasking
// shares), in a real round of kDevices devices (secagg_round.h) where the fuzzer's bytes replace
// or alter one device's message at one stage. Input layout: secagg_round.h PlanFrom.
//
// Checks beyond "no crash": when the round completes, its sum is exactly the sum of the honest
// inputs of the devices it names as survivors, unless the tampered message was accepted where a
// device's own contribution can legitimately change (its masked input, or its Unmasking shares,
// which the protocol cannot verify); and the dequantization of any revealed sum either fails
// with a reason or gives finite values.
#include <cmath>

#include "aggregation/quantize.h"
#include "tests/fuzz/secagg_round.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fleet;
  using namespace fleet::fuzz;
  Input in(data, size);
  const Plan plan = PlanFrom(&in, /*to_client=*/false);
  const Outcome out = RunRound(plan);
  if (out.end != Stage::kDone) return 0;
  const bool own_contribution = out.accepted && (plan.tamper.stage == Stage::kMaskedInput ||
                                                 plan.tamper.stage == Stage::kUnmask);
  if (!own_contribution) {
    FUZZ_CHECK(out.sum == out.expected,
               "round completed with a sum that is not the survivors' (tampered stage %d, "
               "mode %d, accepted %d)",
               static_cast<int>(plan.tamper.stage), static_cast<int>(plan.tamper.mode),
               out.accepted);
  }
  QuantizationSpec q{1.0f, 8, 10, plan.modulus_bits};
  StatusOr<DequantizedSum> d = DequantizeSum(out.sum, q);
  if (d.ok()) {
    for (float v : d->mean_delta) FUZZ_CHECK(std::isfinite(v), "non-finite dequantized value");
    FUZZ_CHECK(std::isfinite(d->train_loss) && std::isfinite(d->val_accuracy),
               "non-finite dequantized metrics");
  }
  return 0;
}
