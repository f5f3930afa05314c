#!/usr/bin/env bash
# Container check (ctest "container", label container; runs only with FLEET_TEST_CONTAINERS=1 and
# a reachable Docker daemon, else exit 77 = skipped with the reason): builds the coordinator,
# client and mosquitto images of deploy/container from this build's Debian packages
# (PACKAGES=prebuilt, on a base image made by base-image.sh), starts deploy/container/compose.yaml
# under a project name of its own, and sees the coordinator's health check (fleetctl health, TLS,
# no client certificate) turn the container healthy, both devices enroll through the provision
# step and come online, one plain HAR round with both, and every container non-root on a
# read-only root filesystem.
# usage: container_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
skip() { echo "container_test: SKIPPED: $*"; exit 77; }
fail() { echo "container_test: FAIL: $*" >&2; exit 1; }
[ "${FLEET_TEST_CONTAINERS:-}" = 1 ] || skip "set FLEET_TEST_CONTAINERS=1 to run it (needs a" \
  "Docker daemon and the Debian archive; about 6 minutes the first time)"
# Docker 20.10's CLI has BuildKit built in (RUN --mount); newer CLIs need the buildx plugin.
docker=${DOCKER:-docker}
[ -x /usr/bin/docker ] && docker=${DOCKER:-/usr/bin/docker}
$docker info >/dev/null 2>&1 || skip "no Docker daemon answers ($docker info)"
command -v docker-compose >/dev/null || skip "docker-compose is not installed"
[ -f "$build/data/har/subject-1.txt" ] || fail "no HAR data in $build/data/har"

work=$(mktemp -d /tmp/fleet-container.XXXXXX)
project=fleetfl-test-$$
tag=test-$$
export FLEET_TAG=$tag FLEET_HAR_DIR=$build/data/har
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export FLEET_COORDINATOR_PORT=$port
compose=(docker-compose -p "$project" -f "$src/deploy/container/compose.yaml")
cleanup() {
  "${compose[@]}" logs --no-color >"$work/compose.log" 2>&1 || true
  "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  for i in coordinator client mosquitto; do $docker rmi "fleetfl/$i:$tag" >/dev/null 2>&1 || true; done
  [ -n "${FLEET_KEEP_TEST_DIRS:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

# 1. Images from the packages of this build.
t0=$(date +%s)
base=$("$src/deploy/container/base-image.sh") || fail "no base image"
mkdir -p "$work/context/build/packages" "$work/context/deploy"
(cd "$build" && cpack -G DEB -B "$work/pkg" >/dev/null)
cp "$work"/pkg/fleetfl-*.deb "$work/context/build/packages/"
cp -r "$src/deploy/container" "$work/context/deploy/"
for i in coordinator client mosquitto; do
  DOCKER_BUILDKIT=1 $docker build -q -f "$work/context/deploy/container/Dockerfile.$i" \
    --build-arg BASE="$base" --build-arg PACKAGES=prebuilt -t "fleetfl/$i:$tag" \
    "$work/context" >"$work/build-$i.log" 2>&1 || fail "image $i: $(tail -n 30 "$work/build-$i.log")"
done
t_images=$(( $(date +%s) - t0 ))
for i in coordinator client; do
  user=$($docker image inspect -f '{{.Config.User}}' "fleetfl/$i:$tag")
  [ "$user" = 10001:10001 ] || fail "image $i runs as '$user', not 10001:10001"
done

# 2. The compose example: coordinator healthy, devices enrolled and online.
t0=$(date +%s)
"${compose[@]}" up -d --no-build >"$work/up.log" 2>&1 || fail "compose up: $(cat "$work/up.log")"
cid=$("${compose[@]}" ps -q coordinator)
health() { $docker inspect -f '{{.State.Health.Status}}' "$cid"; }
for _ in $(seq 120); do [ "$(health)" = healthy ] && break; sleep 1; done
[ "$(health)" = healthy ] || fail "coordinator not healthy: $(health); $("${compose[@]}" logs coordinator)"
t_healthy=$(( $(date +%s) - t0 ))
ctl=($docker exec -i "$cid" fleetctl --coordinator 127.0.0.1:7443
     --ca-cert /var/lib/fleetfl-coordinator/pki/ca.pem
     --cert /var/lib/fleetfl-coordinator/pki/admin.pem
     --key /var/lib/fleetfl-coordinator/pki/admin.key)
[ "$($docker exec "$cid" fleetctl --coordinator 127.0.0.1:7443 \
     --ca-cert /var/lib/fleetfl-coordinator/pki/ca.pem health)" = SERVING ] \
  || fail "fleetctl health in the container does not say SERVING"
online() { [ "$("${ctl[@]}" device list 2>/dev/null | grep -cE '^client-[12] +online')" -eq 2 ]; }
for _ in $(seq 120); do online && break; sleep 1; done
online || fail "devices not online: $("${ctl[@]}" device list 2>&1); $("${compose[@]}" logs client-1 client-2)"

# 3. One plain round of the HAR job with both devices.
sed -e 's/^rounds: .*/rounds: 1/' -e 's/^min_clients: .*/min_clients: 2/' \
  -e 's/^target_clients: .*/target_clients: 2/' "$src/configs/jobs/har-mlp.yaml" > "$work/job.yaml"
printf 'secure_aggregation: {enabled: false}\neval_deadline_s: 5\n' >> "$work/job.yaml"
sed -i '/^eval_deadline_s: 30/d' "$work/job.yaml"
$docker exec -i "$cid" sh -c 'cat > /tmp/job.yaml' < "$work/job.yaml"
job=$("${ctl[@]}" job submit -f /tmp/job.yaml) || fail "job submit: $job"
timeout 300 "${ctl[@]}" job watch "$job" >"$work/watch.log" 2>&1 \
  || fail "job $job: $(cat "$work/watch.log")"

# 4. Hardening as run: non-root, read-only root filesystem, no capabilities.
for s in coordinator client-1 client-2 mosquitto; do
  id=$("${compose[@]}" ps -q "$s")
  [ "$($docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$id")" = true ] || fail "$s: root fs writable"
  uid=$($docker exec "$id" id -u 2>/dev/null)
  [ -n "$uid" ] && [ "$uid" != 0 ] || fail "$s runs as uid '$uid'"
  if $docker exec "$id" sh -c 'touch /usr/probe' 2>/dev/null; then
    fail "$s could write to /usr"
  fi
done
echo "container_test: ok: images ${t_images} s, coordinator healthy after ${t_healthy} s," \
  "2 devices enrolled and trained round 1 of job $job;" \
  "sizes: $(for i in coordinator client mosquitto; do printf '%s %s MB ' "$i" \
    "$(( $($docker image inspect -f '{{.Size}}' "fleetfl/$i:$tag") / 1000000 ))"; done)"
