# Sourced by scripts/demo.sh and scripts/bench.sh: fleets on 127.0.0.1 in $run with the binaries
# in $build. Appends every pid to the caller's `pids` array; the caller owns cleanup.

# A new PKI (`fleet-coordinator init`), the coordinator, and a bootstrap token in
# $run/bootstrap.yaml. Sets `addr` and `ctl` (fleetctl with the admin certificate).
fleet_start() {
  "$build/coordinator/fleet-coordinator" init --state-dir "$run/coordinator" >/dev/null
  local pki=$run/coordinator/pki
  "$build/coordinator/fleet-coordinator" --listen 127.0.0.1:0 --port-file "$run/port" \
    --state-dir "$run/coordinator" >"$run/coordinator.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$run/port" ] && break; sleep 0.1; done
  [ -s "$run/port" ] || { echo "coordinator did not start; see $run/coordinator.log" >&2; return 1; }
  addr=127.0.0.1:$(cat "$run/port")
  ctl=("$build/cli/fleetctl" --coordinator "$addr" --ca-cert "$pki/ca.pem" --cert "$pki/admin.pem"
       --key "$pki/admin.key")
  # Every device enrolls itself with this bootstrap file: its own key, a CSR, a 7-day certificate.
  local token
  token=$("${ctl[@]}" token create --ttl 1h --uses 64 --label local-fleet 2>/dev/null)
  printf 'coordinator: %s\nca_cert_file: %s\ntoken: %s\n' "$addr" "$pki/ca.pem" "$token" \
    >"$run/bootstrap.yaml"
}

# fleet_client TAG DEVICE_ID: writes $run/client-TAG.yaml (the `datasets:` block from stdin) and
# starts a fleet-client with it. FLEET_ALLOW_PLAIN_ROUNDS=1: the devices also train in jobs with
# secure aggregation off (`allow_plain_rounds: true`; they refuse them by default).
fleet_client() {
  { printf 'device_id: %s\nbootstrap: %s\nstate_dir: %s\n' "$2" "$run/bootstrap.yaml" \
      "$run/device-$1"
    [ "${FLEET_ALLOW_PLAIN_ROUNDS:-0}" = 1 ] && echo "allow_plain_rounds: true"
    cat; } >"$run/client-$1.yaml"
  "$build/client/fleet-client" --config "$run/client-$1.yaml" >"$run/client-$1.log" 2>&1 &
  pids+=($!)
}

# Waits until `count` devices are online.
fleet_wait_online() {
  for _ in $(seq 300); do
    [ "$("${ctl[@]}" device list | grep -c ' online ')" -ge "$1" ] && return 0
    sleep 0.2
  done
  echo "only $("${ctl[@]}" device list | grep -c ' online ') of $1 devices came online" >&2
  return 1
}

# UCI HAR, one client per subject; the 5 highest-numbered subjects only evaluate. Sets
# `subjects`, `n` and `heldout`.
har_fleet_start() {
  "$root/scripts/prepare-har.sh" "$build/data/har"
  fleet_start
  mapfile -t subjects < <(ls "$build/data/har" | sed -n 's/^subject-\([0-9]*\)\.txt$/\1/p' | sort -n)
  n=${#subjects[@]}
  heldout=5
  local i s role val
  for i in "${!subjects[@]}"; do
    s=${subjects[$i]}
    if [ "$i" -ge $((n - heldout)) ]; then role=evaluate; val=""; else role=train; val="    validation_fraction: 0.2"; fi
    fleet_client "$s" "har-subject-$s" <<YAML
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
  done
}

# UCI Occupancy: one client per day of datatraining.txt (scripts/prepare-occupancy.sh), and two
# evaluators holding datatest.txt and datatest2.txt. Sets `days`.
occupancy_fleet_start() {
  "$root/scripts/prepare-occupancy.sh" "$build/data/occupancy"
  fleet_start
  mapfile -t days < <(ls "$build/data/occupancy" | sed -n 's/^day-\(.*\)\.csv$/\1/p' | sort)
  local d
  for d in "${days[@]}"; do
    occupancy_client "day-$d" train "$build/data/occupancy/day-$d.csv"
  done
  occupancy_client test evaluate "$root/../shared/data/uci-occupancy-detection/datatest.txt"
  occupancy_client test2 evaluate "$root/../shared/data/uci-occupancy-detection/datatest2.txt"
}

occupancy_client() {
  local val=""
  [ "$2" = train ] && val="    validation_fraction: 0.2"
  fleet_client "occ-$1" "room-$1" <<YAML
datasets:
  - name: uci-occupancy
    role: $2
$val
    normalize:  # declared fleet-wide (here: statistics of the training file, as from a pilot)
      mean: [119.5, 606.5]
      std: [194.7, 314.3]
    files:
      - path: $3
        format: csv
        header: true
        # Light and CO2: what people change in a room. Temperature and humidity follow weather
        # and HVAC, and tie a model to its training week (Candanedo & Feldheim 2016; RESULTS.md).
        features: [Light, CO2]
        label: Occupancy
YAML
}
