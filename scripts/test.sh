#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test (unit + integration) with ctest.
# Extra arguments go to ctest, e.g. `scripts/test.sh -L unit` or `-R FedAvg`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
export OPENBLAS_NUM_THREADS=1
cd "${BUILD_DIR:-$root/build}"
ctest --output-on-failure --timeout 600 -j "${CTEST_JOBS:-2}" "$@"
