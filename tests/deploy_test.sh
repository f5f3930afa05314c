#!/usr/bin/env bash
# Deployment check (ctest "deploy"): the systemd units verify with no warning and their offline
# security exposure stays low; the Debian packages hold what they should; and the client package,
# unpacked and run with its packaged config unchanged plus a bootstrap file, enrolls itself and
# joins a real coordinator.
# usage: deploy_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
work=$(mktemp -d /tmp/fleet-deploy.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "deploy_test: FAIL: $*" >&2; exit 1; }

# 1. Packages.
(cd "$build" && cpack -G DEB -B "$work/pkg" >/dev/null)
client=$(ls "$work"/pkg/fleetfl-client_*.deb) coord=$(ls "$work"/pkg/fleetfl-coordinator_*.deb)
# (Listings go through variables: grep -q closing a pipe early trips pipefail.)
has() { case "$1" in *"$2"*) return 0 ;; esac; return 1; }
list=$(dpkg-deb -c "$client")
for want in ./usr/bin/fleet-client ./usr/lib/systemd/system/fleet-client.service ./etc/fleetfl/client.yaml; do
  has "$list" " $want" || fail "$client lacks $want"
done
list=$(dpkg-deb -c "$coord")
for want in ./usr/bin/fleet-coordinator ./usr/bin/fleetctl ./usr/lib/systemd/system/fleet-coordinator.service; do
  has "$list" " $want" || fail "$coord lacks $want"
done
has "$(dpkg-deb -f "$client" Depends)" libtorch || fail "client package does not depend on libtorch"
has "$(dpkg-deb -I "$client" conffiles)" /etc/fleetfl/client.yaml || fail "client.yaml is not a conffile"
has "$(dpkg-deb -I "$client" postinst)" "systemctl enable fleet-client.service" \
  || fail "client postinst does not enable the unit"

# 2. Units, as installed, pointing at the unpacked binaries.
dpkg -x "$client" "$work/root"
dpkg -x "$coord" "$work/root"
mkdir -p "$work/units"
for u in fleet-client fleet-coordinator; do
  sed "s|/usr/bin/|$work/root/usr/bin/|g" "$work/root/usr/lib/systemd/system/$u.service" \
    > "$work/units/$u.service"
done
out=$(cd "$work/units" && systemd-analyze verify fleet-client.service fleet-coordinator.service 2>&1) \
  || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warns: $out"
for u in fleet-client fleet-coordinator; do
  score=$(cd "$work/units" && systemd-analyze security --offline=true "$u.service" 2>/dev/null \
    | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p')
  echo "deploy_test: $u.service exposure $score"
  awk -v s="$score" 'BEGIN{exit !(s != "" && s <= 2.0)}' || fail "$u exposure $score > 2.0"
done

# 3. Zero-touch enrollment with the packaged client config.
"$build/coordinator/fleet-coordinator" init --state-dir "$work/coord" >/dev/null
"$build/coordinator/fleet-coordinator" --listen 127.0.0.1:0 --port-file "$work/port" \
  --state-dir "$work/coord" >"$work/coord.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
addr=127.0.0.1:$(cat "$work/port")
ctl=("$build/cli/fleetctl" --coordinator "$addr" --ca-cert "$work/coord/pki/ca.pem"
     --cert "$work/coord/pki/admin.pem" --key "$work/coord/pki/admin.key")
printf 'coordinator: %s\nca_cert_file: %s\ntoken: %s\n' "$addr" "$work/coord/pki/ca.pem" \
  "$("${ctl[@]}" token create --uses 1 --ttl 10m 2>/dev/null)" > "$work/bootstrap.yaml"
"$work/root/usr/bin/fleet-client" --config "$work/root/etc/fleetfl/client.yaml" \
  --bootstrap "$work/bootstrap.yaml" --state-dir "$work/client-state" >"$work/client.log" 2>&1 &
pids+=($!)
host=$(hostname)
online() { [[ "$("${ctl[@]}" device list 2>/dev/null)" =~ (^|$'\n')$host\ +online ]]; }
for _ in $(seq 100); do online && break; sleep 0.2; done
online || fail "packaged client did not enroll and join: $(cat "$work/client.log")"
has "$(cat "$work/coord/audit.log")" '"event":"enroll"' || fail "no enrollment in the audit log"
echo "deploy_test: ok (packages, units, zero-touch enrollment as $host)"
