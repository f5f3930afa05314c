# Sourced by scripts/demo.sh and scripts/bench.sh: starts a fleet on 127.0.0.1 in $run with the
# binaries in $build: a new PKI (`fleet-coordinator init`), the coordinator, a bootstrap token,
# and one fleet-client per UCI HAR subject (the 5 highest-numbered subjects only evaluate).
# Appends every pid to the caller's `pids` array; sets `addr`, `ctl` (fleetctl with the admin
# certificate), `subjects`, `n` and `heldout`. The caller owns cleanup.
har_fleet_start() {
  "$root/scripts/prepare-har.sh" "$build/data/har"
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
  token=$("${ctl[@]}" token create --ttl 1h --uses 64 --label har-fleet 2>/dev/null)
  printf 'coordinator: %s\nca_cert_file: %s\ntoken: %s\n' "$addr" "$pki/ca.pem" "$token" \
    >"$run/bootstrap.yaml"
  mapfile -t subjects < <(ls "$build/data/har" | sed -n 's/^subject-\([0-9]*\)\.txt$/\1/p' | sort -n)
  n=${#subjects[@]}
  heldout=5
  local i s role val
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
}
