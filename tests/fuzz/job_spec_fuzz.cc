// Fuzz target: job specifications, both ways they arrive: the YAML an administrator writes
// (ParseJobSpecYaml, what fleetctl runs), and the v1::JobSpec protobuf the coordinator receives
// in SubmitJob and validates again (ValidateJobSpec), because the wire is not trusted.
//
// Input: byte 0 even: the rest is YAML; odd: the rest is a serialized v1::JobSpec. Checks beyond
// "no crash": a spec fleetctl accepts survives the wire (it serializes to a JobSpec the
// coordinator parses and accepts: no invalid UTF-8 and no value the coordinator's validation
// refuses), and every accepted spec has a buildable model layout whose slots add up, a threat
// model secure aggregation can size rounds with, and strategy parameters that validate.
#include <string>

#include "aggregation/secagg_params.h"
#include "common/job_spec.h"
#include "common/model_layout.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void CheckAccepted(const fleet::v1::JobSpec& spec) {
  using namespace fleet;
  StatusOr<ModelLayout> layout = LayoutFor(spec.model());
  FUZZ_CHECK(layout.ok(), "accepted spec without a model layout: %s",
             layout.status().message().c_str());
  size_t total = 0;
  for (const TensorSlot& t : layout->tensors) {
    __extension__ unsigned __int128 product = 1;
    for (uint32_t d : t.shape) product *= d;
    FUZZ_CHECK(product == t.numel, "tensor %s: numel is not the product of its shape",
               t.name.c_str());
    total += t.numel;
  }
  FUZZ_CHECK(total == layout->total, "layout slots do not add up");
  FUZZ_CHECK(MaxRoundSize(spec) >= spec.min_clients(), "round size below min_clients");
  FUZZ_CHECK(ValidateStrategy(StrategyParamsOf(spec.strategy())).ok(),
             "strategy does not validate");
  if (!spec.secure_aggregation().disabled()) {
    // The coordinator derives a round's graph for the devices it selected: min_clients..target.
    const SecAggThreatModel th = ThreatModelOf(spec.secure_aggregation());
    StatusOr<SecAggGraphParams> p = ChooseGraphParams(spec.min_clients(), th);
    if (p.ok()) {
      FUZZ_CHECK(p->t >= 2 && p->t <= p->k + 1 && p->k <= p->n - 1,
                 "graph parameters out of range: %s", p->ToString().c_str());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fleet;
  fuzz::Input in(data, size);
  const bool yaml = in.Byte() % 2 == 0;
  const std::string rest(in.Rest());
  if (yaml) {
    StatusOr<v1::JobSpec> spec = ParseJobSpecYaml(rest, "job.yaml");
    if (!spec.ok()) {
      FUZZ_CHECK(!spec.status().message().empty(), "a refusal without a reason");
      return 0;
    }
    // What fleetctl sends, as the coordinator receives it.
    v1::JobSpec received;
    FUZZ_CHECK(received.ParseFromString(spec->SerializeAsString()),
               "a spec fleetctl accepts does not parse at the coordinator (invalid UTF-8?)");
    Status valid = ValidateJobSpec(received);
    FUZZ_CHECK(valid.ok(), "a spec fleetctl accepts is refused by the coordinator: %s",
               valid.message().c_str());
    CheckAccepted(received);
    return 0;
  }
  v1::JobSpec spec;
  if (!spec.ParseFromString(rest)) return 0;
  if (!ValidateJobSpec(spec).ok()) return 0;
  CheckAccepted(spec);
  return 0;
}
