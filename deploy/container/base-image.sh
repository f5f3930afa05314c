#!/usr/bin/env bash
# Makes a Debian 12 base image without a registry: mmdebstrap (minbase, this machine's apt
# sources) piped into `docker import`. The images here build FROM it with
# --build-arg BASE=fleetfl/debian:bookworm where debian:bookworm-slim cannot be pulled.
# usage: base-image.sh [TAG]   (default fleetfl/debian:bookworm; an existing tag is kept)
set -euo pipefail
tag=${1:-fleetfl/debian:bookworm}
if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag"; exit 0; fi
sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list
command -v mmdebstrap >/dev/null || { echo "base-image: needs mmdebstrap" >&2; exit 1; }
mmdebstrap --quiet --variant=minbase \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  bookworm - "$sources" | docker import --change 'CMD ["bash"]' - "$tag" >/dev/null
echo "$tag"
