#!/usr/bin/env bash
# Benchmarks (not tests). Writes JSON to bench/results/.
#   scripts/bench.sh round    N clients x D float32 parameters, no-op training, over TLS loopback,
#                             against the raw gRPC transfer floor measured in the same run
#                             (plain FedAvg: secure aggregation off).
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
  *) echo "usage: scripts/bench.sh round|secagg" >&2; exit 2 ;;
esac
