#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (clang, ASan + UBSan, build tree $FUZZ_BUILD_DIR,
# default build-fuzz) and runs each for FUZZ_RUNS executions (default 1000000) from a copy of its
# seed corpus tests/fuzz/corpus/TARGET (the repository's corpus is never written to).
#
#   scripts/fuzz.sh                      every target
#   scripts/fuzz.sh tensor_codec csv     only these
#   FUZZ_RUNS=20000 scripts/fuzz.sh      a short run while developing
#   FUZZ_MAX_TIME_S=900                  also stop each target after this many seconds
#   FUZZ_PARALLEL=2                      run this many targets at once (default 1)
#   FUZZ_TIMEOUT_S=10                    an input that runs longer than this is a finding
#   FUZZ_RESULTS=path.json               where the summary goes (default
#                                        bench/results/fuzz-<UTC time>.json)
#
# Prints per target the executions, the time, exec/s and the findings, and writes the same as JSON.
# Exits 1 when any target finds a crash, a leak, a timeout, an out-of-memory or a sanitizer
# report (its input is kept under $FUZZ_BUILD_DIR/findings/TARGET/), or does not run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
runs=${FUZZ_RUNS:-1000000}
max_time=${FUZZ_MAX_TIME_S:-0}
parallel=${FUZZ_PARALLEL:-1}
timeout_s=${FUZZ_TIMEOUT_S:-10}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=${FUZZ_RESULTS:-$root/bench/results/fuzz-$stamp.json}
corpus_root=$root/tests/fuzz/corpus

"$root/scripts/install-deps.sh" fuzz

if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in "$root"/tests/fuzz/*_fuzz.cc; do
    t=$(basename "$f" _fuzz.cc)
    targets+=("$t")
  done
fi
build_targets=()
for t in "${targets[@]}"; do
  [ -f "$root/tests/fuzz/${t}_fuzz.cc" ] || { echo "fuzz: no target '$t' (tests/fuzz/${t}_fuzz.cc)" >&2; exit 2; }
  [ -d "$corpus_root/$t" ] || { echo "fuzz: target '$t' has no seed corpus $corpus_root/$t" >&2; exit 2; }
  build_targets+=("fuzz_$t")
done

export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
export CCACHE_BASEDIR=$root CCACHE_NOHASHDIR=1
if [ ! -f "$build/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DFLEET_FUZZ=ON >/dev/null
fi
cmake --build "$build" -j "${JOBS:-$(nproc)}" --target "${build_targets[@]}"

work=$(mktemp -d "${TMPDIR:-/tmp}/fleet-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Sanitizer reports end the run (the fuzzer saves the input); leaks are checked after every input.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}
if [ -f "$root/tests/lsan.supp" ]; then
  export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/lsan.supp}
fi

# Runs one target in $work/TARGET: its log, exit status and start and end times.
run_one() {
  local t=$1
  local dir=$work/$t
  mkdir -p "$dir/corpus" "$dir/artifacts"
  cp -R "$corpus_root/$t/." "$dir/corpus/"
  local args=(-runs="$runs" -timeout="$timeout_s" -rss_limit_mb=2048 -print_final_stats=1
              -artifact_prefix="$dir/artifacts/")
  [ "$max_time" != 0 ] && args+=(-max_total_time="$max_time")
  local start end rc=0
  start=$(date +%s.%N)
  "$build/tests/fuzz/fuzz_$t" "${args[@]}" "$dir/corpus" >"$dir/log" 2>&1 || rc=$?
  end=$(date +%s.%N)
  echo "$rc" >"$dir/status"
  echo "$start $end" >"$dir/time"
}

running=0
for t in "${targets[@]}"; do
  echo "fuzz: $t: $runs executions$([ "$max_time" != 0 ] && echo " (at most ${max_time} s)")..."
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$parallel" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

final_stat() {  # final_stat FILE NAME: the value of libFuzzer's final "stat::NAME:" line, or 0
  local v
  v=$(sed -n "s/^stat::$2: *\([0-9.]*\).*/\1/p" "$1" | tail -1)
  echo "${v:-0}"
}

failed=0
mkdir -p "$(dirname "$results")"
{
  printf '{\n  "date": "%s",\n  "commit": "%s",\n  "runs_requested": %s,\n  "max_time_s": %s,\n' \
    "$stamp" "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)" "$runs" "$max_time"
  printf '  "sanitizers": "address,undefined,leak",\n  "targets": [\n'
} >"$results"
printf '\n%-16s %12s %9s %9s %8s  %s\n' target executions seconds exec/s findings result
first=1
for t in "${targets[@]}"; do
  dir=$work/$t
  log=$dir/log
  rc=$(cat "$dir/status" 2>/dev/null || echo 1)
  read -r start end <"$dir/time"
  seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  execs=$(final_stat "$log" number_of_executed_units)
  rate=$(awk -v n="$execs" -v s="$seconds" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')
  new_units=$(final_stat "$log" new_units_added)
  findings=$(find "$dir/artifacts" -type f | wc -l)
  result=clean
  if [ "$rc" != 0 ] || [ "$findings" -gt 0 ]; then
    failed=1
    result=$(grep -o -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer)[^(]*|runtime error: .*|FUZZ_CHECK\(.*|ALARM: .*|out-of-memory.*' "$log" | head -c 200 || true)
    result=${result:-"exit $rc"}
    keep=$build/findings/$t
    mkdir -p "$keep"
    cp "$dir"/artifacts/* "$keep/" 2>/dev/null || true
    cp "$log" "$keep/fuzz.log"
    [ "$findings" -eq 0 ] && findings=1
  elif [ "$execs" -lt "$runs" ] && [ "$max_time" = 0 ]; then
    failed=1
    result="stopped after $execs executions (see log)"
    mkdir -p "$build/findings/$t" && cp "$log" "$build/findings/$t/fuzz.log"
  fi
  printf '%-16s %12s %9s %9s %8s  %s\n' "$t" "$execs" "$seconds" "$rate" "$findings" "$result"
  [ $first = 1 ] || printf ',\n' >>"$results"
  first=0
  printf '    {"name": "%s", "executions": %s, "seconds": %s, "exec_per_sec": %s, "findings": %s, "new_units": %s, "seed_files": %s, "result": "%s"}' \
    "$t" "$execs" "$seconds" "$rate" "$findings" "$new_units" \
    "$(find "$corpus_root/$t" -type f | wc -l)" "$(printf '%s' "$result" | tr -d '"\\' | tr -c '[:print:]' ' ')" >>"$results"
done
printf '\n  ]\n}\n' >>"$results"
echo "fuzz: summary in $results"
if [ $failed != 0 ]; then
  echo "fuzz: FAILED: inputs and logs under $build/findings/" >&2
  exit 1
fi
