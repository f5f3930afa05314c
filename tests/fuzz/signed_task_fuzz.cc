// Fuzz target: the signed task envelope a device receives from FetchTask (proto/fleet.proto
// SignedTask; client/model_guard.h ModelGuard: signature over the received bytes, then parsing,
// then the rollback check against the accepted rounds), what the device then decodes from an
// accepted task (model layout, the global model through the tensor codec, the SecAgg
// quantization settings), and the coordinator's envelope encoder (coordinator/task_envelope.h
// SealTask).
//
// Input: byte 0 even: the rest is the envelope as received (mostly unsigned or badly signed:
// the refusal paths); odd: the rest is a Task, which the harness seals with the fleet's
// model-signing key as the coordinator does (the acceptance paths). Checks beyond "no crash":
// SealTask's bytes are exactly the SignedTask protobuf encoding of the task's serialization and
// its signature; a task is accepted only with a signature that verifies over exactly the
// received task bytes, it is what those bytes parse to, and it is not older than the round the
// device accepted before for the same job; a sealed task for a job is accepted unless it is such
// a rollback.
#include <string>

#include "aggregation/quantize.h"
#include "client/model_guard.h"
#include "common/model_layout.h"
#include "common/tensor_codec.h"
#include "coordinator/task_envelope.h"
#include "crypto/model_signature.h"
#include "crypto/random.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

const fleet::crypto::SigningKey& ModelKey() {
  static const fleet::crypto::SigningKey* key = [] {
    FUZZ_CHECK(fleet::crypto::Init(), "libsodium init");
    fleet::crypto::Secret32 seed;
    for (size_t i = 0; i < seed.size(); ++i) seed.data()[i] = static_cast<uint8_t>(3 * i + 1);
    return new fleet::crypto::SigningKey(fleet::crypto::SigningKey::FromSeed(seed));
  }();
  return *key;
}

// What the device does with the bytes of one FetchTask answer. `sealed`: made by SealTask with
// the fleet's key.
void Receive(const std::string& envelope, bool sealed) {
  using namespace fleet;
  v1::SignedTask signed_task;
  if (!signed_task.ParseFromString(envelope)) {
    FUZZ_CHECK(!sealed, "a sealed task does not parse as a SignedTask");
    return;
  }
  if (signed_task.task().empty()) return;  // "no task": the long poll ended
  (void)ClaimedIdentity(signed_task);
  // The device already accepted round 5 (epoch 1) of job-1.
  std::unique_ptr<AcceptedRoundsFile> accepted = std::move(AcceptedRoundsFile::Open("")).value();
  FUZZ_CHECK(accepted->Record("job-1", TaskMark{1, 5}).ok(), "record");
  ModelGuard guard(ModelKey().public_key(), accepted.get());
  StatusOr<v1::Task> task = guard.Accept(signed_task);
  v1::Task parsed;
  const bool parses = parsed.ParseFromString(signed_task.task());
  const TaskMark mark{parsed.resume_epoch(), parsed.round()};
  const bool rollback = parsed.job_id() == "job-1" && mark < TaskMark{1, 5};
  if (!task.ok()) {
    FUZZ_CHECK(!sealed || !parses || parsed.job_id().empty() || rollback,
               "a sealed task was refused: %s", task.status().message().c_str());
    return;
  }
  FUZZ_CHECK(
      crypto::VerifyTask(ModelKey().public_key(), signed_task.task(), signed_task.signature()),
      "accepted a task whose signature does not verify");
  FUZZ_CHECK(parses && task->SerializeAsString() == parsed.SerializeAsString(),
             "the accepted task is not what the signed bytes parse to");
  FUZZ_CHECK(!rollback, "accepted a rollback");
  const TaskMark* newest = accepted->Newest(task->job_id());
  FUZZ_CHECK(newest != nullptr && !(*newest < mark), "the accepted round was not recorded");

  // HandleTask (client/client_runner.cc): the model spec and the global model it carries.
  StatusOr<ModelLayout> layout = LayoutFor(task->model());
  if (layout.ok() && layout->total <= (1u << 16)) {
    StatusOr<std::vector<TensorView>> params = DecodeParameters(task->parameters(), *layout);
    if (params.ok()) (void)Flatten(*params, *layout);
  }
  if (task->has_secagg()) {
    const v1::SecAggTaskConfig& cfg = task->secagg();
    (void)ValidateQuantization(
        {cfg.clip(), cfg.value_bits(), cfg.max_weight(), cfg.modulus_bits()});
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fleet;
  fuzz::Input in(data, size);
  const bool seal = in.Byte() % 2 == 1;
  const std::string rest(in.Rest());
  if (!seal) {
    Receive(rest, /*sealed=*/false);
    return 0;
  }
  v1::Task task;
  if (!task.ParseFromString(rest)) return 0;
  const std::string envelope = SealTask(task, &ModelKey());
  v1::SignedTask expected;
  expected.set_task(task.SerializeAsString());
  expected.set_signature(crypto::SignTask(ModelKey(), expected.task()));
  FUZZ_CHECK(envelope == expected.SerializeAsString(),
             "SealTask differs from the SignedTask encoding");
  v1::SignedTask unsigned_task;
  unsigned_task.set_task(expected.task());
  FUZZ_CHECK(SealTask(task, nullptr) == unsigned_task.SerializeAsString(),
             "unsigned SealTask differs from the SignedTask encoding");
  Receive(envelope, /*sealed=*/true);
  return 0;
}
