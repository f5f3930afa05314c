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
"$root/scripts/prepare-har.sh" "$build/data/har"

# A new fleet: CA, server and admin certificates, model-signing key.
"$build/coordinator/fleet-coordinator" init --state-dir "$run/coordinator" >/dev/null
pki=$run/coordinator/pki
"$build/coordinator/fleet-coordinator" --listen 127.0.0.1:0 --port-file "$run/port" \
  --state-dir "$run/coordinator" >"$run/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$run/port" ] && break; sleep 0.1; done
[ -s "$run/port" ] || { echo "demo: coordinator did not start; see $run/coordinator.log" >&2; exit 1; }
addr=127.0.0.1:$(cat "$run/port")
ctl=("$build/cli/fleetctl" --coordinator "$addr" --ca-cert "$pki/ca.pem" --cert "$pki/admin.pem" \
  --key "$pki/admin.key")
# Every device enrolls itself with this bootstrap file: its own key, a CSR, a 7-day certificate.
token=$("${ctl[@]}" token create --ttl 1h --uses 64 --label demo 2>/dev/null)
cat >"$run/bootstrap.yaml" <<YAML
coordinator: $addr
ca_cert_file: $pki/ca.pem
token: $token
YAML

mapfile -t subjects < <(ls "$build/data/har" | sed -n 's/^subject-\([0-9]*\)\.txt$/\1/p' | sort -n)
n=${#subjects[@]}
heldout=5
for i in "${!subjects[@]}"; do
  s=${subjects[$i]}
  if [ "$i" -ge $((n - heldout)) ]; then role=evaluate; val=""; else role=train; val="    validation_fraction: 0.2"; fi
  cat >"$run/client-$s.yaml" <<YAML
device_id: har-subject-$s
bootstrap: $run/bootstrap.yaml
state_dir: $run/device-$s
datasets:
  - name: uci-har
    role: $role
$val
    label_offset: -1
    files:
      - path: $build/data/har/subject-$s.txt
        format: whitespace
        subject: 0
        label: 1
        features: rest
YAML
  "$build/client/fleet-client" --config "$run/client-$s.yaml" >"$run/client-$s.log" 2>&1 &
  pids+=($!)
done
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
