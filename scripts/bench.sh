#!/usr/bin/env bash
# Benchmarks (not tests). Writes JSON to bench/results/.
#   scripts/bench.sh round    N clients x D float32 parameters, no-op training, over TLS loopback,
#                             against the raw gRPC transfer floor measured in the same run
#                             (plain FedAvg: secure aggregation off).
#   scripts/bench.sh quality  UCI HAR federated (one client per subject) per strategy vs the same
#                             model trained centrally on the pooled data; writes quality.json and
#                             docs/RESULTS.md (+ docs/results/*.png when matplotlib is installed).
#   scripts/bench.sh secagg   SecAgg+: client masking vs raw ChaCha20 keystream, server unmasking
#                             (N=50, D=1e5, 10% dropouts), and full rounds secure vs plain for
#                             N in {10, 50}, D=1e5, with protocol bytes per client.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
what=${1:-round}
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" >/dev/null
mkdir -p "$root/bench/results"
# field NAME JSON: the numeric value of "NAME" in a one-line JSON object.
field() { printf '%s' "$2" | sed -n "s/.*\"$1\": \([0-9.e+-]*\).*/\1/p"; }

case "$what" in
  round)
    out="$root/bench/results/round.json"
    {
      echo "{\"benchmark\": \"round\", \"machine\": \"$(nproc) cores\", \"results\": ["
      sep=""
      for nd in "10 1e5" "50 1e5" "50 1e6"; do
        set -- $nd
        line=$("$build/bench/round_bench" "$build/coordinator/fleet-coordinator" "$1" "$2")
        echo "round: $line" >&2
        printf '%s  %s\n' "$sep" "$line"
        sep=","
      done
      echo "]}"
    } > "$out.tmp"
    mv "$out.tmp" "$out"
    echo "bench: wrote $out"
    ;;
  secagg)
    out="$root/bench/results/secagg.json"
    micro=$("$build/bench/secagg_bench" 1e5 30 50 0.1)
    echo "secagg: $micro" >&2
    {
      echo "{\"benchmark\": \"secagg\", \"machine\": \"$(nproc) cores\","
      echo " \"micro\": $micro,"
      echo " \"rounds\": ["
      sep=""
      for n in 10 50; do
        plain=$("$build/bench/round_bench" "$build/coordinator/fleet-coordinator" "$n" 1e5 plain)
        secure=$("$build/bench/round_bench" "$build/coordinator/fleet-coordinator" "$n" 1e5 secure)
        p=$(field s_per_round "$plain")
        s=$(field s_per_round "$secure")
        b=$(field protocol_bytes_per_client "$secure")
        # All n simulated devices share this machine's cores with the coordinator; a real fleet
        # runs each device's extra SecAgg CPU on its own processor, in parallel.
        est=$(awk -v s="$s" -v p="$p" -v n="$n" -v c="$(nproc)" \
          -v cs="$(field device_cpu_ms_per_round "$secure")" \
          -v cp="$(field device_cpu_ms_per_round "$plain")" \
          'BEGIN{printf "%.2f", (s - n * (cs - cp) / 1000 / c) / p}')
        line=$(printf '{"n": %s, "d": 100000, "secagg_s_per_round": %s, "plain_s_per_round": %s, "ratio": %.2f, "ratio_est_devices_on_own_cpu": %s, "protocol_bytes_per_client": %s, "secure_run": %s, "plain_run": %s}' \
          "$n" "$s" "$p" "$(awk -v a="$s" -v b="$p" 'BEGIN{print a/b}')" "$est" "$b" "$secure" "$plain")
        echo "secagg: $line" >&2
        printf '%s  %s\n' "$sep" "$line"
        sep=","
      done
      echo "]}"
    } > "$out.tmp"
    mv "$out.tmp" "$out"
    echo "bench: wrote $out"
    ;;
  quality)
    # HAR, one client per subject (non-IID by person): 16 train, 5 held out. Each strategy runs
    # the same job for $QUALITY_ROUNDS rounds on the same fleet; the centralized reference trains
    # the same model on the pooled 16 subjects for as many epochs.
    rounds=${QUALITY_ROUNDS:-20}
    # Plots need Debian's matplotlib (not in install-deps.sh: only this benchmark uses it).
    if ! dpkg-query -W -f='${Status}' python3-matplotlib 2>/dev/null | grep -q "ok installed"; then
      ${SUDO:-$([ "$(id -u)" -eq 0 ] || echo sudo)} apt-get install -y -q python3-matplotlib >/dev/null \
        || echo "bench: python3-matplotlib not installed; RESULTS.md without plots" >&2
    fi
    py=/usr/bin/python3
    [ -x "$py" ] || py=python3
    run=$(mktemp -d /tmp/fleet-quality.XXXXXX)
    pids=()
    trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$run"' EXIT
    export OPENBLAS_NUM_THREADS=1
    . "$root/scripts/har-fleet.sh"
    har_fleet_start
    for _ in $(seq 300); do
      [ "$("${ctl[@]}" device list | grep -c ' online ')" -ge "$n" ] && break
      sleep 0.2
    done
    for entry in "fedavg|" "fedprox|, mu: 0.01" "fedadam|, server_learning_rate: 0.01" \
                 "fedyogi|, server_learning_rate: 0.01" "median|"; do
      name=${entry%%|*} extra=${entry#*|}
      secure=""
      [ "$name" = median ] && secure="secure_aggregation: {enabled: false}"
      sed "s/^rounds: .*/rounds: $rounds/" "$root/configs/jobs/har-mlp.yaml" >"$run/job-$name.yaml"
      # Replace the strategy block with `strategy: {name: X, ...}`.
      "$py" - "$run/job-$name.yaml" "$name$extra" "$secure" <<'PY'
import sys
path, strategy, secure = sys.argv[1:4]
lines = open(path).read().split("\n")
out, skip = [], False
for l in lines:
    if l.startswith("strategy:"):
        out.append("strategy: {name: %s}" % strategy); skip = True; continue
    if skip and l.startswith("  "): continue
    skip = False
    out.append(l)
if secure: out.append(secure)
open(path, "w").write("\n".join(out) + "\n")
PY
      start=$(date +%s.%N)
      id=$("${ctl[@]}" job submit -f "$run/job-$name.yaml")
      "${ctl[@]}" job watch "$id" >/dev/null
      end=$(date +%s.%N)
      "${ctl[@]}" -o json job get "$id" >"$run/result-$name.json"
      echo "$name $(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')" >>"$run/walltime.txt"
      echo "quality: $name done" >&2
    done
    train_cfgs=() eval_cfgs=()
    for i in "${!subjects[@]}"; do
      if [ "$i" -ge $((n - heldout)) ]; then eval_cfgs+=("$run/client-${subjects[$i]}.yaml")
      else train_cfgs+=("$run/client-${subjects[$i]}.yaml"); fi
    done
    "$build/bench/central_train" "$run/job-fedavg.yaml" --train "${train_cfgs[@]}" \
      --eval "${eval_cfgs[@]}" >"$run/central.json"
    "$py" "$root/scripts/quality-report.py" "$run" "$root/bench/results/quality.json" \
      "$root/docs"
    ;;
  *) echo "usage: scripts/bench.sh round|secagg|quality" >&2; exit 2 ;;
esac
