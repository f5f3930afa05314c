#!/usr/bin/env bash
# Installs every Debian 12 package fleetfl needs to build, test, demo and benchmark.
# Idempotent: when everything is already installed it only checks, and returns in about a second.
#   scripts/install-deps.sh        build, test, demo, bench
#   scripts/install-deps.sh fuzz   also clang, its sanitizer runtimes and llvm (scripts/fuzz.sh)
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git xz-utils openssl procps
  libtorch-dev libopenblas0-pthread
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libflatbuffers-dev flatbuffers-compiler
  libssl-dev libsodium-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libsqlite3-dev sqlite3
  libsystemd-dev systemd dpkg-dev
  libmosquitto-dev mosquitto
)
for group in "$@"; do
  case "$group" in
    fuzz) PACKAGES+=(clang libclang-rt-14-dev llvm) ;;  # libFuzzer, ASan/UBSan for clang, llvm-symbolizer
    *) echo "install-deps: unknown package group '$group' (known: fuzz)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
