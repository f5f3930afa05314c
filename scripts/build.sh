#!/usr/bin/env bash
# Configures (once) and builds fleetfl with Ninja and ccache into $BUILD_DIR (default: build).
# CI=true turns warnings into errors. FLEET_SANITIZE=address|thread builds a sanitizer tree.
# Extra arguments go to `cmake --build`, e.g. `--target fleet_tests`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
werror=OFF
[ "${CI:-}" = "true" ] && werror=ON
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
# Relative paths in the cache key: clean clones elsewhere (CI) still hit the cache.
export CCACHE_BASEDIR=$root CCACHE_NOHASHDIR=1
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} \
    -DFLEET_WERROR=$werror -DFLEET_SANITIZE="${FLEET_SANITIZE:-}" >/dev/null
fi
# Two cores: torch translation units need ~1.5 GB each, so -j2 is safe on 24 GiB.
cmake --build "$build" -j "${JOBS:-$(nproc)}" "$@"
