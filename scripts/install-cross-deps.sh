#!/usr/bin/env bash
# Installs what the arm64 cross build (`scripts/package.sh --arch arm64`) and its emulated test
# (ctest -L arm64) need, on a Debian 12 amd64 machine, as root:
#   - on this machine: Debian's aarch64 cross compiler, qemu-user-static (with its binfmt_misc
#     entry, so arm64 programs run under emulation), mmdebstrap;
#   - an arm64 Debian 12 root in $FLEET_ARM64_SYSROOT (default /var/cache/fleetfl/bookworm-arm64)
#     holding fleetfl's :arm64 development packages, installed by arm64 apt and dpkg under
#     emulation. It is the cross compiler's sysroot and dpkg-shlibdeps reads its dpkg database.
# Why a separate root rather than `dpkg --add-architecture arm64` here: libtorch-dev and
# libyaml-cpp-dev are not `Multi-Arch: same`, so installing their :arm64 versions would remove the
# amd64 ones the native build needs.
# Idempotent: a root that is complete (it holds $FLEET_ARM64_SYSROOT/.fleetfl-packages with the
# current package list) is only checked. Creating it (467 arm64 packages, 1.1 GB, unpacked
# and configured by emulated dpkg) took 37 minutes on a busy 2-core machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sysroot=${FLEET_ARM64_SYSROOT:-/var/cache/fleetfl/bookworm-arm64}

HOST_PACKAGES=(g++-aarch64-linux-gnu qemu-user-static binfmt-support mmdebstrap dpkg-dev)
# The arm64 side of scripts/install-deps.sh's build dependencies, for fleet-client only
# (protobuf-compiler-grpc: gRPC's CMake package checks that its plugin exists; the build runs the
# amd64 one).
ARM64_PACKAGES=(
  libc6-dev libstdc++-12-dev
  libtorch-dev libopenblas0-pthread
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev
  libflatbuffers-dev
  libssl-dev libsodium-dev
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libsqlite3-dev
  libsystemd-dev libmosquitto-dev
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-cross-deps: needs root or sudo" >&2; exit 1; }
  SUDO="sudo"
fi

missing=()
for p in "${HOST_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-cross-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# qemu-user-static registers its binfmt_misc entries from its postinst; on a machine that boots
# without systemd (containers, CI sandboxes) binfmt_misc may not be mounted yet.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  $SUDO update-binfmts --enable qemu-aarch64
fi

# The cross linker follows the root's library symlinks on this machine, so absolute ones (the
# alternatives behind libblas.so.3 and liblapack.so.3, some -dev links) would point at this
# machine's files: make them relative, resolved inside the root.
relative_links() {
  local link target
  find "$1/usr/lib/aarch64-linux-gnu" -maxdepth 2 -type l -lname '/*' | while read -r link; do
    target=$(chroot "$1" readlink -f "${link#"$1"}") || continue
    [ -e "$1$target" ] || continue
    $SUDO ln -sfn "$(realpath -s --relative-to="$(dirname "$link")" "$1$target")" "$link"
  done
}

want=$(printf '%s\n' "${ARM64_PACKAGES[@]}")
if [ -f "$sysroot/.fleetfl-packages" ] && [ "$(cat "$sysroot/.fleetfl-packages")" = "$want" ]; then
  relative_links "$sysroot"
  echo "install-cross-deps: host tools and arm64 root $sysroot present"
  exit 0
fi

# The root uses this machine's Debian sources (same mirror, same snapshot).
sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list
[ -f "$sources" ] || { echo "install-cross-deps: no Debian apt sources on this machine" >&2; exit 1; }
echo "install-cross-deps: creating the arm64 root $sysroot (half an hour or more)"
start=$(date +%s)
$SUDO rm -rf --one-file-system "$sysroot.tmp"
$SUDO mkdir -p "$(dirname "$sysroot")"
include=$(IFS=,; echo "${ARM64_PACKAGES[*]}")
# Documentation, manuals and translations are not needed to compile against the root.
$SUDO mmdebstrap --quiet --mode=root --variant=minbase --architectures=arm64 \
  --include="$include" \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  bookworm "$sysroot.tmp" "$sources"
relative_links "$sysroot.tmp"
printf '%s\n' "$want" | $SUDO tee "$sysroot.tmp/.fleetfl-packages" >/dev/null
$SUDO rm -rf --one-file-system "$sysroot"
$SUDO mv "$sysroot.tmp" "$sysroot"
echo "install-cross-deps: arm64 root ready in $(( $(date +%s) - start )) s: $(du -sh "$sysroot" | cut -f1)"
