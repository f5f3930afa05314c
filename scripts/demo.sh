#!/usr/bin/env bash
# fleetfl demo: a coordinator and one fleet-client per UCI HAR subject on 127.0.0.1, a federated
# job submitted and watched with fleetctl, over TLS with a throwaway CA. 16 subjects train, the 5
# highest-numbered subjects are held out and only evaluate. Ends with one summary line:
#   demo: job <id> finished: <R> rounds, <N> clients, secure aggregation k=<k> t=<t>, held-out accuracy <0.xxx>
# Every process it starts is stopped on exit or Ctrl-C. Logs: $FLEET_DEMO_DIR (kept on failure).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
job_file=${1:-$root/configs/jobs/har-mlp.yaml}

"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"

run=${FLEET_DEMO_DIR:-$(mktemp -d /tmp/fleetfl-demo.XXXXXX)}
mkdir -p "$run"
pids=()
ok=0
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$ok" = 1 ]; then rm -rf "$run"; else echo "demo: logs kept in $run" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export OPENBLAS_NUM_THREADS=1
. "$root/scripts/fleet-lib.sh"
har_fleet_start
echo "demo: coordinator at $addr, $((n - heldout)) training clients, $heldout held-out evaluators (subjects ${subjects[*]: -$heldout})"

job=$("${ctl[@]}" job submit -f "$job_file")
"${ctl[@]}" job watch "$job"
json=$("${ctl[@]}" -o json job get "$job")
last() { printf '%s\n' "$json" | sed -n "s/.*\"$1\": \([0-9.e+-]*\).*/\1/p" | tail -n 1; }
rounds=$(printf '%s\n' "$json" | grep -c '"participants"' || true)
clients=$(last participants)
acc=$(last eval_accuracy)
k=$(last secagg_neighbours)
t=$(last secagg_threshold)
secure="secure aggregation k=${k:-?} t=${t:-?}"
[ -z "$k" ] && secure="secure aggregation OFF"
ok=1
printf 'demo: job %s finished: %s rounds, %s clients, %s, held-out accuracy %.3f\n' \
  "$job" "$rounds" "$clients" "$secure" "${acc:-0}"
