#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test (unit + integration) with ctest.
# Extra arguments go to ctest, e.g. `scripts/test.sh -L unit` or `-R FedAvg`.
# Opt-in (each minutes long, see README Deployment; left out without the switch):
# FLEET_TEST_ARM64=1 the arm64 package under emulation (ctest label arm64),
# FLEET_TEST_CONTAINERS=1 the container images and compose example (label container).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
export OPENBLAS_NUM_THREADS=1
cd "${BUILD_DIR:-$root/build}"
left_out=()
if [ "${FLEET_TEST_ARM64:-}" = 1 ]; then export FLEET_TEST_ARM64; else left_out+=(arm64); fi
if [ "${FLEET_TEST_CONTAINERS:-}" = 1 ]; then export FLEET_TEST_CONTAINERS; else left_out+=(container); fi
optional=()
[ ${#left_out[@]} -eq 0 ] || optional=(-LE "^($(IFS='|'; echo "${left_out[*]}"))\$")
ctest --output-on-failure --timeout 600 -j "${CTEST_JOBS:-2}" "${optional[@]}" "$@"
