#!/usr/bin/env bash
# Benchmarks (not tests). Writes JSON to bench/results/.
#   scripts/bench.sh round    N clients x D float32 parameters, no-op training, over TLS loopback,
#                             against the raw gRPC transfer floor measured in the same run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
what=${1:-round}
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" >/dev/null
mkdir -p "$root/bench/results"
tmp=$(mktemp -d /tmp/fleet-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$root/scripts/make-dev-certs.sh" "$tmp/pki"

case "$what" in
  round)
    out="$root/bench/results/round.json"
    {
      echo "{\"benchmark\": \"round\", \"machine\": \"$(nproc) cores\", \"results\": ["
      sep=""
      for nd in "10 1e5" "50 1e5" "50 1e6"; do
        set -- $nd
        line=$("$build/bench/round_bench" "$build/coordinator/fleet-coordinator" "$tmp/pki" "$1" "$2")
        echo "round: $line" >&2
        printf '%s  %s\n' "$sep" "$line"
        sep=","
      done
      echo "]}"
    } > "$out.tmp"
    mv "$out.tmp" "$out"
    echo "bench: wrote $out"
    ;;
  *) echo "usage: scripts/bench.sh round" >&2; exit 2 ;;
esac
