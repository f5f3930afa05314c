#!/usr/bin/env bash
# Builds the Debian packages into ${OUT:-BUILD_DIR/packages}.
#   scripts/package.sh               fleetfl-coordinator and fleetfl-client for this machine
#   scripts/package.sh --arch arm64  fleetfl-client for Debian 12 arm64 (Raspberry Pi-class
#                                    devices), cross-built in ${BUILD_DIR:-build-arm64}
# Install on a device: `apt install ./fleetfl-client_*.deb`, put the bootstrap file at
# /etc/fleetfl/bootstrap.yaml, and it enrolls at the next boot.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
arch=native
while [ $# -gt 0 ]; do
  case $1 in
    --arch) arch=${2:-}; shift 2 || { echo "package: --arch needs a value" >&2; exit 2; } ;;
    --arch=*) arch=${1#--arch=}; shift ;;
    *) echo "usage: package.sh [--arch arm64]" >&2; exit 2 ;;
  esac
done
case $arch in
  native | "$(dpkg --print-architecture)") arch=native ;;
  arm64) ;;
  *) echo "package: --arch '$arch' is not supported (this machine's or arm64)" >&2; exit 2 ;;
esac

if [ "$arch" = native ]; then
  build=${BUILD_DIR:-$root/build}
  out=${OUT:-$build/packages}
  "$root/scripts/install-deps.sh"
  "$root/scripts/build.sh" >/dev/null
  mkdir -p "$out"
  (cd "$build" && cpack -G DEB -B "$out" >/dev/null)
  rm -rf "$out/_CPack_Packages"
  ls "$out"/*.deb
  exit 0
fi

# arm64: Debian's aarch64 cross compiler against an arm64 Debian root (the sysroot, with the
# :arm64 development packages); only fleet-client, without tests.
"$root/scripts/install-cross-deps.sh" >&2
sysroot=${FLEET_ARM64_SYSROOT:-/var/cache/fleetfl/bookworm-arm64}
build=${BUILD_DIR:-$root/build-arm64}
out=${OUT:-$build/packages}
werror=OFF
[ "${CI:-}" = "true" ] && werror=ON
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
export CCACHE_BASEDIR=$root CCACHE_NOHASHDIR=1
if [ ! -f "$build/build.ninja" ]; then
  # CMAKE_SKIP_INSTALL_ALL_DEPENDENCY: cpack then needs only the packaged target built.
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} \
    -DCMAKE_TOOLCHAIN_FILE="$root/cmake/aarch64-linux-gnu.cmake" -DFLEET_ARM64_SYSROOT="$sysroot" \
    -DBUILD_TESTING=OFF -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON -DFLEET_WERROR=$werror >/dev/null
fi
cmake --build "$build" -j "${JOBS:-$(nproc)}" --target fleet-client >&2

# Depends: dpkg-shlibdeps as for a native package, but reading the arm64 root's libraries and
# dpkg database. It asks dpkg-query which package owns each library it found; the wrapper below
# looks paths inside the root up without the root's prefix there.
tmp=$(mktemp -d /tmp/fleet-package.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/pkg/debian"
cat > "$tmp/bin/dpkg-query" <<EOF
#!/usr/bin/env bash
args=()
for a in "\$@"; do args+=("\${a#"$sysroot"}"); done
/usr/bin/dpkg-query --admindir="$sysroot/var/lib/dpkg" "\${args[@]}" | sed 's|: /|: $sysroot/|'
EOF
chmod +x "$tmp/bin/dpkg-query"
printf 'Source: fleetfl\n\nPackage: fleetfl-client\nArchitecture: arm64\n' \
  > "$tmp/pkg/debian/control"
cp "$build/client/fleet-client" "$tmp/pkg/fleet-client"
shlibs=$(cd "$tmp/pkg" && PATH="$tmp/bin:$PATH" DEB_HOST_ARCH=arm64 \
  dpkg-shlibdeps --admindir="$sysroot/var/lib/dpkg" -l"$sysroot/lib/aarch64-linux-gnu" \
  -l"$sysroot/usr/lib/aarch64-linux-gnu" -O fleet-client)
depends=${shlibs#shlibs:Depends=}
[ -n "$depends" ] && [ "$depends" != "$shlibs" ] || {
  echo "package: dpkg-shlibdeps gave no dependencies: $shlibs" >&2; exit 1; }

mkdir -p "$out"
rm -f "$out"/fleetfl-client_*_arm64.deb
# libopenblas0-pthread as in deploy/CMakeLists.txt: LibTorch's BLAS, loaded at run time.
(cd "$build" && cpack -G DEB -B "$out" -D CPACK_COMPONENTS_ALL=client \
  -D "CPACK_DEBIAN_CLIENT_PACKAGE_DEPENDS=$depends, libopenblas0-pthread" >/dev/null)
rm -rf "$out/_CPack_Packages"
ls "$out"/fleetfl-client_*_arm64.deb
