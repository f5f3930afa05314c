#!/usr/bin/env bash
# Builds the Debian packages fleetfl-coordinator and fleetfl-client into ${OUT:-build/packages}.
# Install on a device: `apt install ./fleetfl-client_*.deb`, put the bootstrap file at
# /etc/fleetfl/bootstrap.yaml, and it enrolls at the next boot.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
out=${OUT:-$build/packages}
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" >/dev/null
mkdir -p "$out"
(cd "$build" && cpack -G DEB -B "$out" >/dev/null)
rm -rf "$out/_CPack_Packages"
ls "$out"/*.deb
