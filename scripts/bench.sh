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
#                             N in {10, 50}, D=1e5 (median of SECAGG_REPEATS=3 alternating runs
#                             each), with protocol bytes per client, and the floor of that ratio
#                             on this machine (ratio_floor_shared_cores).
#                             SECAGG_BASELINE=COMMIT also builds that commit (in
#                             build-baseline/, from a git worktree) and runs its secure rounds
#                             alternating with this tree's: secure_vs_baseline is the ratio of
#                             the two medians, measured in the same run.
#   scripts/bench.sh scale    fleet-sim: SCALE_DEVICES (10000) virtual devices connected with
#                             heartbeats (coordinator RSS, heartbeats/s), then plain rounds for
#                             N in {100, 1000} x D in {1e5, 1e6}: s/round and peak RSS, next to the
#                             model size and the bytes a round moves.
#   scripts/bench.sh inference  batch-1 latency of the HAR MLP and the 1D-CNN sequence model, idle
#                             and while local training runs (SCHED_IDLE), against bare ATen calls;
#                             MQTT-in -> command-out p99 through a real mosquitto broker and the
#                             control loop, against the broker's echo round trip; peak RSS.
#   scripts/bench.sh memory   fleet-client's resident memory on the HAR MLP (VmRSS sampled every
#                             100 ms, and VmHWM): enrolled and idle, while training 5 rounds with
#                             the control loop inferring on readings replayed at 50 Hz, then
#                             inferring only; for torch_threads 1 and 4.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
what=${1:-round}
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" >/dev/null
mkdir -p "$root/bench/results"
# field NAME JSON: the numeric value of "NAME" in a one-line JSON object.
field() { printf '%s' "$2" | sed -n "s/.*\"$1\": \([0-9.e+-]*\).*/\1/p"; }
# median_run LINE...: the run (one-line JSON) with the median s_per_round.
median_run() {
  for l in "$@"; do printf '%s\t%s\n' "$(field s_per_round "$l")" "$l"; done |
    sort -g | sed -n "$(( ($# + 1) / 2 ))p" | cut -f2-
}
# runs_s LINE...: their s_per_round values as a JSON array, in run order.
runs_s() {
  local out="" l
  for l in "$@"; do out="$out${out:+, }$(field s_per_round "$l")"; done
  printf '[%s]' "$out"
}

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
    base_build=""
    if [ -n "${SECAGG_BASELINE:-}" ]; then
      base_src=$root/build-baseline/src
      base_build=$root/build-baseline/build
      base_sha=$(git -C "$root" rev-parse --verify "$SECAGG_BASELINE^{commit}")
      if [ "$(git -C "$base_src" rev-parse HEAD 2>/dev/null)" != "$base_sha" ]; then
        rm -rf "$base_src"; git -C "$root" worktree prune
        git -C "$root" worktree add --detach "$base_src" "$base_sha" >/dev/null
      fi
      # The same configuration as scripts/build.sh (the baseline's own may predate --target).
      [ -f "$base_build/build.ninja" ] ||
        CCACHE_BASEDIR=$base_src CCACHE_NOHASHDIR=1 cmake -S "$base_src" -B "$base_build" -G Ninja \
          -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} >/dev/null
      CCACHE_BASEDIR=$base_src CCACHE_NOHASHDIR=1 cmake --build "$base_build" -j "${JOBS:-$(nproc)}" \
        --target round_bench fleet-coordinator >/dev/null
      echo "secagg: baseline $base_sha built in $base_build" >&2
    fi
    micro=$("$build/bench/secagg_bench" 1e5 30 50 0.1)
    echo "secagg: $micro" >&2
    {
      echo "{\"benchmark\": \"secagg\", \"machine\": \"$(nproc) cores\","
      echo " \"micro\": $micro,"
      echo " \"rounds\": ["
      sep=""
      for n in 10 50; do
        # Shared cores make single runs noisy: plain and secure alternate, SECAGG_REPEATS (3)
        # times each, and the median run of each mode is reported with all runs listed.
        plains=(); secures=(); bases=()
        for _ in $(seq "${SECAGG_REPEATS:-3}"); do
          plains+=("$("$build/bench/round_bench" "$build/coordinator/fleet-coordinator" "$n" 1e5 plain)")
          secures+=("$("$build/bench/round_bench" "$build/coordinator/fleet-coordinator" "$n" 1e5 secure)")
          [ -n "$base_build" ] && bases+=("$("$base_build/bench/round_bench" \
            "$base_build/coordinator/fleet-coordinator" "$n" 1e5 secure)")
        done
        plain=$(median_run "${plains[@]}")
        secure=$(median_run "${secures[@]}")
        baseline=""
        if [ -n "$base_build" ]; then
          base=$(median_run "${bases[@]}")
          baseline=$(printf ', "baseline_commit": "%s", "baseline_secagg_s_per_round": %s, "baseline_runs_s": %s, "secure_vs_baseline": %.3f' \
            "$base_sha" "$(field s_per_round "$base")" "$(runs_s "${bases[@]}")" \
            "$(awk -v a="$(field s_per_round "$secure")" -v b="$(field s_per_round "$base")" 'BEGIN{print a/b}')")
        fi
        p=$(field s_per_round "$plain")
        s=$(field s_per_round "$secure")
        b=$(field protocol_bytes_per_client "$secure")
        # All n simulated devices share this machine's cores with the coordinator; a real fleet
        # runs each device's extra SecAgg CPU on its own processor, in parallel.
        est=$(awk -v s="$s" -v p="$p" -v n="$n" -v c="$(nproc)" \
          -v cs="$(field device_cpu_ms_per_round "$secure")" \
          -v cp="$(field device_cpu_ms_per_round "$plain")" \
          'BEGIN{printf "%.2f", (s - n * (cs - cp) / 1000 / c) / p}')
        # The floor for the ratio on this machine: the plain round plus only the CPU SecAgg+ cannot
        # avoid, at unit costs measured above, spread perfectly over the cores: per device k + 1
        # mask expansions of D words, 2k X25519 agreements, 2 signatures, k + t verifications;
        # on the server the N self masks. No protocol overhead, no stage barriers.
        floor=$(awk -v p="$p" -v n="$n" -v c="$(nproc)" -v d=100000 \
          -v k="$(field secagg_k "$secure")" -v t="$(field secagg_t "$secure")" \
          -v r="$(field keystream_elems_per_s "$micro")" -v x="$(field x25519_us "$micro")" \
          -v sg="$(field ed25519_sign_us "$micro")" -v v="$(field ed25519_verify_us "$micro")" \
          'BEGIN{dev = (2*k*x + 2*sg + (k+t)*v) / 1e6 + (k+1)*d/r;
                 printf "%.2f", (p + (n*dev + n*d/r) / c) / p}')
        line=$(printf '{"n": %s, "d": 100000, "secagg_s_per_round": %s, "plain_s_per_round": %s, "ratio": %.2f, "ratio_floor_shared_cores": %s, "ratio_est_devices_on_own_cpu": %s, "protocol_bytes_per_client": %s, "secagg_runs_s": %s, "plain_runs_s": %s, "secure_run": %s, "plain_run": %s%s}' \
          "$n" "$s" "$p" "$(awk -v a="$s" -v b="$p" 'BEGIN{print a/b}')" "$floor" "$est" "$b" \
          "$(runs_s "${secures[@]}")" "$(runs_s "${plains[@]}")" "$secure" "$plain" "$baseline")
        echo "secagg: $line" >&2
        printf '%s  %s\n' "$sep" "$line"
        sep=","
      done
      echo "]}"
    } > "$out.tmp"
    mv "$out.tmp" "$out"
    echo "bench: wrote $out"
    ;;
  scale)
    out="$root/bench/results/scale.json"
    # Device certificates are kept between runs (enrolling 10,000 devices takes minutes).
    work=${SCALE_DIR:-$build/scale-bench}
    devices=${SCALE_DEVICES:-10000}
    mkdir -p "$work"
    coord=""; sim=""
    cleanup() { [ -n "$sim" ] && kill "$sim" 2>/dev/null; [ -n "$coord" ] && kill "$coord" 2>/dev/null; wait 2>/dev/null || true; }
    trap cleanup EXIT
    [ -f "$work/state/pki/ca.pem" ] || "$build/coordinator/fleet-coordinator" init --state-dir "$work/state" >/dev/null
    rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
    hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
    start_coordinator() {
      rm -f "$work/port" "$work/state/coordinator.db"*
      "$build/coordinator/fleet-coordinator" --listen 127.0.0.1:0 --port-file "$work/port" \
        --state-dir "$work/state" --heartbeat-interval-ms 5000 --offline-after-ms 30000 \
        --log-level warn > "$work/coordinator.log" 2>&1 &
      coord=$!
      for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
      port=$(cat "$work/port")
      ctl=("$build/cli/fleetctl" --coordinator "127.0.0.1:$port" --ca-cert "$work/state/pki/ca.pem"
           --cert "$work/state/pki/admin.pem" --key "$work/state/pki/admin.key")
      token=$("${ctl[@]}" token create --uses 1000000 --ttl 24h 2>/dev/null | grep fleet1_)
      printf 'coordinator: 127.0.0.1:%s\nca_cert_file: %s\ntoken: %s\n' "$port" \
        "$work/state/pki/ca.pem" "$token" > "$work/bootstrap.yaml"
    }
    start_sim() {  # N [extra args]
      local n=$1; shift
      rm -f "$work/sim.json"
      "$build/bench/fleet-sim" --bootstrap "$work/bootstrap.yaml" --state-dir "$work/devices" \
        --devices "$n" --dataset sim --workers 8 --stats-file "$work/sim.json" "$@" \
        > "$work/sim.log" 2>&1 &
      sim=$!
      local t0=$SECONDS
      until [ "$(field joined "$(cat "$work/sim.json" 2>/dev/null)")" = "$n" ]; do
        [ $((SECONDS - t0)) -lt 1800 ] || { echo "bench: $n devices did not join" >&2; exit 1; }
        sleep 1
      done
      joined_s=$((SECONDS - t0))
    }
    stop() { kill "$sim" "$coord" 2>/dev/null; wait "$sim" "$coord" 2>/dev/null || true; sim=""; coord=""; }

    # 1. Connected devices with heartbeats.
    start_coordinator
    base_kb=$(rss_kb "$coord")
    start_sim "$devices"
    devices_join_s=$joined_s
    sleep 15
    h0=$(field heartbeats "$(cat "$work/sim.json")"); t0=$(date +%s.%N)
    peak_kb=0
    for _ in $(seq 30); do
      r=$(rss_kb "$coord"); [ "$r" -gt "$peak_kb" ] && peak_kb=$r; sleep 1
    done
    sleep 5  # the stats file is rewritten every 5 s
    h1=$(field heartbeats "$(cat "$work/sim.json")"); t1=$(date +%s.%N)
    hb_rate=$(awk -v a="$h0" -v b="$h1" -v s="$t0" -v e="$t1" 'BEGIN{printf "%.0f", (b-a)/(e-s)}')
    online=$("${ctl[@]}" -o json device list | grep -c '"online": true' || true)
    echo "scale: $devices devices ($online online), RSS $((peak_kb / 1024)) MB, $hb_rate heartbeats/s" >&2
    stop

    # 2. Rounds: N participants, D parameters (an MLP 561-h-6 sized to D), no evaluation.
    rounds_json=""; sep=""
    for nd in "100 1e5 178" "100 1e6 1770" "1000 1e5 178" "1000 1e6 1770"; do
      set -- $nd
      start_coordinator
      start_sim "$1" --eval-examples 0
      idle_kb=$(rss_kb "$coord")
      cat > "$work/job.yaml" <<JOB
name: scale-$1-$2
dataset: sim
model: {type: mlp, task: classification, input_dim: 561, hidden: [$3], output_dim: 6}
train: {optimizer: sgd, learning_rate: 0.01}
rounds: 3
min_clients: $1
target_clients: $1
round_deadline_s: 1800
secure_aggregation: {enabled: false}
JOB
      "${ctl[@]}" --timeout 7200 job submit -f "$work/job.yaml" --watch > "$work/job.out" 2>&1
      id=$(head -1 "$work/job.out")
      jobjson=$("${ctl[@]}" -o json job get "$id")
      # Round 1 pays for connection warm-up; report the mean of rounds 2 and 3.
      spr=$(printf '%s' "$jobjson" | sed -n 's/.*"duration_s": \([0-9.e+-]*\).*/\1/p' | tail -2 |
            awk '{s+=$1} END {printf "%.3f", s/NR}')
      params=$((561 * $3 + $3 + $3 * 6 + 6))
      peak=$(hwm_kb "$coord")
      line=$(printf '{"n": %s, "d": %s, "params": %s, "s_per_round": %s, "model_mb": %.2f, "round_traffic_mb": %.0f, "traffic_mb_per_s": %.0f, "idle_rss_mb": %d, "peak_rss_mb": %d, "peak_over_idle_mb": %d}' \
        "$1" "$2" "$params" "$spr" "$(awk -v p="$params" 'BEGIN{print p*4/1e6}')" \
        "$(awk -v p="$params" -v n="$1" 'BEGIN{print 2*n*p*4/1e6}')" \
        "$(awk -v p="$params" -v n="$1" -v s="$spr" 'BEGIN{print 2*n*p*4/1e6/s}')" \
        $((idle_kb / 1024)) $((peak / 1024)) $(((peak - idle_kb) / 1024)))
      echo "scale: $line" >&2
      rounds_json="$rounds_json$sep  $line"; sep=$',\n'
      stop
    done
    {
      echo "{\"benchmark\": \"scale\", \"machine\": \"$(nproc) cores\","
      printf ' "devices": %s, "online": %s, "join_s": %s, "coordinator_rss_mb": %d, "coordinator_base_rss_mb": %d, "rss_kb_per_device": %d, "heartbeats_per_s": %s, "heartbeat_interval_ms": 5000,\n' \
        "$devices" "$online" "$devices_join_s" $((peak_kb / 1024)) $((base_kb / 1024)) \
        $(((peak_kb - base_kb) / devices)) "$hb_rate"
      echo " \"rounds\": ["
      printf '%s\n' "$rounds_json"
      echo "]}"
    } > "$out.tmp"
    mv "$out.tmp" "$out"
    echo "bench: wrote $out"
    ;;
  quality)
    # Each dataset: one fleet, the same job run once per strategy (each secure one from its own
    # seed's initial model), and the same model trained
    # centrally on the pooled training data as the reference. UCI HAR: one client per subject
    # (16 train, 5 held out). UCI Occupancy: one client per day; datatest.txt and datatest2.txt
    # held by evaluators, and each final model also scored on each file separately.
    rounds=${QUALITY_ROUNDS:-20}
    # Plots need Debian's matplotlib (not in install-deps.sh: only this benchmark uses it).
    if ! dpkg-query -W -f='${Status}' python3-matplotlib 2>/dev/null | grep -q "ok installed"; then
      $([ "$(id -u)" -eq 0 ] || echo sudo) apt-get install -y -q python3-matplotlib >/dev/null \
        || echo "bench: python3-matplotlib not installed; RESULTS.md without plots" >&2
    fi
    py=/usr/bin/python3
    [ -x "$py" ] || py=python3
    top=$(mktemp -d /tmp/fleet-quality.XXXXXX)
    pids=()
    stop_fleet() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pids=(); }
    trap 'stop_fleet; rm -rf "$top"' EXIT
    export OPENBLAS_NUM_THREADS=1
    . "$root/scripts/fleet-lib.sh"
    export FLEET_ALLOW_PLAIN_ROUNDS=1  # the median strategy runs without secure aggregation
    tool=$build/bench/quality_tool
    # run_strategies DATASET JOB_YAML ROUNDS: every strategy on the running fleet.
    run_strategies() {
      local dataset=$1 job=$2 r=$3 entry name extra secure id start end seed=0
      for entry in "fedavg|" "fedprox|, mu: 0.01" "fedadam|, server_learning_rate: 0.01" \
                   "fedyogi|, server_learning_rate: 0.01" "median|"; do
        name=${entry%%|*} extra=${entry#*|}
        # Each secure job starts from its own seed's model: the coordinator refuses a second
        # secure job over a model a sum was already revealed over (docs/security.md).
        seed=$((seed + 1))
        secure="seed: $seed"
        [ "$name" = median ] && secure="secure_aggregation: {enabled: false}"
        sed "s/^rounds: .*/rounds: $r/" "$job" >"$run/job-$name.yaml"
        "$py" - "$run/job-$name.yaml" "$name$extra" "$secure" <<'PY'
import sys  # replace the strategy block with `strategy: {name: X, ...}`
path, strategy, secure = sys.argv[1:4]
out, skip = [], False
for l in open(path).read().split("\n"):
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
        "${ctl[@]}" job watch "$id" >/dev/null || true
        end=$(date +%s.%N)
        "${ctl[@]}" -o json job get "$id" >"$run/result-$name.json"
        echo "$name $(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')" >>"$run/walltime.txt"
        echo "$id" >"$run/id-$name.txt"
        echo "quality: $dataset $name done" >&2
      done
    }

    # evaluate_finals SUFFIX CLIENT_YAML...: each strategy's final checkpoint on their eval data,
    # into final-<strategy>SUFFIX.json.
    evaluate_finals() {
      local suffix=$1 name id last
      shift
      for name in $(cut -d' ' -f1 "$run/walltime.txt"); do
        id=$(cat "$run/id-$name.txt")
        last=$(ls "$run/coordinator/checkpoints/$id" | sort -t- -k2 -n | tail -n 1)
        "$tool" evaluate "$run/job-$name.yaml" "$run/coordinator/checkpoints/$id/$last" \
          --eval "$@" >"$run/final-$name$suffix.json"
      done
    }

    run=$top/uci-har
    mkdir -p "$run"
    har_fleet_start
    fleet_wait_online "$n"
    run_strategies uci-har "$root/configs/jobs/har-mlp.yaml" "$rounds"
    train_cfgs=() eval_cfgs=()
    for i in "${!subjects[@]}"; do
      if [ "$i" -ge $((n - heldout)) ]; then eval_cfgs+=("$run/client-${subjects[$i]}.yaml")
      else train_cfgs+=("$run/client-${subjects[$i]}.yaml"); fi
    done
    "$tool" central "$run/job-fedavg.yaml" --train "${train_cfgs[@]}" --eval "${eval_cfgs[@]}" \
      >"$run/central.json"
    evaluate_finals "" "${eval_cfgs[@]}"  # with confusion matrices
    stop_fleet

    run=$top/uci-occupancy
    mkdir -p "$run"
    occupancy_fleet_start
    fleet_wait_online $((${#days[@]} + 2))
    run_strategies uci-occupancy "$root/configs/jobs/occupancy-mlp.yaml" "${QUALITY_OCC_ROUNDS:-50}"
    day_cfgs=()
    for d in "${days[@]}"; do day_cfgs+=("$run/client-occ-day-$d.yaml"); done
    for t in test test2; do
      # 20 epochs: more overfits this small model to the training week (see RESULTS.md).
      "$tool" central "$run/job-fedavg.yaml" --epochs 20 --train "${day_cfgs[@]}" \
        --eval "$run/client-occ-$t.yaml" >"$run/central-$t.json"
      evaluate_finals "-$t" "$run/client-occ-$t.yaml"
    done
    stop_fleet

    "$py" "$root/scripts/quality-report.py" "$top" "$root/bench/results/quality.json" \
      "$root/docs"
    ;;
  inference)
    out="$root/bench/results/inference.json"
    "$root/scripts/prepare-har.sh" "$build/data/har" >/dev/null
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    line=$(OPENBLAS_NUM_THREADS=1 "$build/bench/inference_bench" "$build/data/har/subject-1.txt" "$scratch" 2>"$scratch/log") \
      || { cat "$scratch/log" >&2; exit 1; }
    echo "inference: $line" >&2
    printf '{"benchmark": "inference", "machine": "%s cores", "results": %s}\n' "$(nproc)" "$line" > "$out.tmp"
    mv "$out.tmp" "$out"
    echo "bench: wrote $out"
    ;;
  memory)
    out="$root/bench/results/memory.json"
    "$root/scripts/prepare-har.sh" "$build/data/har" >/dev/null
    scratch=$(mktemp -d)
    pids=()
    trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$scratch"' EXIT
    "$build/coordinator/fleet-coordinator" init --state-dir "$scratch/coord" >/dev/null
    "$build/coordinator/fleet-coordinator" --listen 127.0.0.1:0 --port-file "$scratch/port" \
      --state-dir "$scratch/coord" >"$scratch/coord.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do [ -s "$scratch/port" ] && break; sleep 0.1; done
    addr=127.0.0.1:$(cat "$scratch/port")
    ctl=("$build/cli/fleetctl" --coordinator "$addr" --ca-cert "$scratch/coord/pki/ca.pem"
         --cert "$scratch/coord/pki/admin.pem" --key "$scratch/coord/pki/admin.key")
    # The wearable's 561 features as scalar fields f0..f560, replayed from subject 1's rows.
    fields=$(seq 0 560 | sed 's/.*/      - {name: f&, min: -1, max: 1}/')
    { seq 0 560 | sed 's/^/f/' | paste -sd,; cut -d' ' -f3- "$build/data/har/subject-1.txt" | tr ' ' ,; } \
      > "$scratch/readings.csv"
    sed -e 's/^rounds: .*/rounds: 5/' -e 's/^min_clients: .*/min_clients: 1/' \
      -e 's/^target_clients: .*/target_clients: 1/' "$root/configs/jobs/har-mlp.yaml" \
      > "$scratch/job.yaml"
    printf 'secure_aggregation: {enabled: false}\n' >> "$scratch/job.yaml"
    # rss PID SECONDS: the largest VmRSS (MB) sampled every 100 ms for that long.
    rss() {
      local max=0 v
      for _ in $(seq $(( $2 * 10 ))); do
        v=$(awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || true)
        [ "${v:-0}" -gt "$max" ] && max=$v
        sleep 0.1
      done
      echo $(( max / 1024 ))
    }
    results=""
    for threads in 1 4; do
      {
        printf 'device_id: memory-%s\nstate_dir: %s\ntorch_threads: %s\npoll_wait_ms: 1000\n' \
          "$threads" "$scratch/device-$threads" "$threads"
        printf 'datasets:\n  - {name: uci-har, role: train, validation_fraction: 0.2, '
        printf 'label_offset: -1,\n     files: [{path: %s, format: whitespace, subject: 0, ' \
          "$build/data/har/subject-1.txt"
        printf 'label: 1, features: rest}]}\n'
        printf 'control:\n  model_dataset: uci-har\n'
        printf '  outputs: [walking, upstairs, downstairs, sitting, standing, laying]\n'
        printf '  replay: {path: %s, rate_hz: 50, loop: true}\n' "$scratch/readings.csv"
        printf '  schema:\n    max_payload_bytes: 16384\n    fields:\n%s\n' "$fields"
        printf '  deadline_ms: 20\n'
        printf '  default_action: {topic: care/m/alert, command: {status: model_unavailable}}\n'
        printf '  rules:\n    - {name: possible_fall, when: laying > 0.9, for_windows: 3, '
        printf 'release_when: laying < 0.5,\n       publish: {topic: care/m/alert, '
        printf 'command: {alert: possible_fall}}}\n'
      } > "$scratch/client-$threads.yaml"
      printf 'coordinator: %s\nca_cert_file: %s\ntoken: %s\n' "$addr" "$scratch/coord/pki/ca.pem" \
        "$("${ctl[@]}" token create --uses 1 --ttl 1h 2>/dev/null)" \
        > "$scratch/bootstrap-$threads.yaml"
      OPENBLAS_NUM_THREADS=1 "$build/client/fleet-client" --config "$scratch/client-$threads.yaml" \
        --bootstrap "$scratch/bootstrap-$threads.yaml" >"$scratch/client-$threads.log" 2>&1 &
      pid=$!
      pids+=($pid)
      for _ in $(seq 300); do
        "${ctl[@]}" device list 2>/dev/null | grep -q "^memory-$threads  *online" && break
        sleep 0.2
      done
      idle=$(rss "$pid" 3)
      job=$("${ctl[@]}" job submit -f "$scratch/job.yaml")
      "${ctl[@]}" job watch "$job" >/dev/null 2>&1 &
      watch=$!
      train=0
      while kill -0 "$watch" 2>/dev/null; do
        v=$(rss "$pid" 1)
        [ "$v" -gt "$train" ] && train=$v
      done
      wait "$watch" || { echo "memory: job $job failed" >&2; cat "$scratch/client-$threads.log" >&2; exit 1; }
      infer=$(rss "$pid" 5)
      hwm=$(( $(awk '/VmHWM/ {print $2}' "/proc/$pid/status") / 1024 ))
      kill "$pid"
      line=$(printf '{"torch_threads": %s, "rss_idle_mb": %s, "rss_training_and_inferring_mb": %s, "rss_inferring_mb": %s, "peak_rss_mb": %s}' \
        "$threads" "$idle" "$train" "$infer" "$hwm")
      echo "memory: $line" >&2
      results="$results${results:+, }$line"
    done
    printf '{"benchmark": "memory", "machine": "%s cores", "goal_peak_rss_mb": 200, "results": [%s]}\n' \
      "$(nproc)" "$results" > "$out.tmp"
    mv "$out.tmp" "$out"
    echo "bench: wrote $out"
    ;;
  *) echo "usage: scripts/bench.sh round|secagg|quality|scale|inference|memory" >&2; exit 2 ;;
esac
