#!/usr/bin/env bash
# Build the small Python image the service-endpoint tests run (issue 15): Debian's python3 and its
# libraries only (mmdebstrap --variant=extract from the Debian mirror), plus scripts/images/pyservice/server.py.
#
# Prints the image reference, localhost/janction-pyservice:<content hash>, as its last line of stdout.
# Cached twice: podman keeps the image under that tag (a rerun costs well under a second), and the root
# filesystem tarball stays under $JANCTION_IMAGE_CACHE (default ~/.cache/janction/images), so a podman
# store that lost the image imports it again in seconds. The hash covers this script, the server and the
# package list; a change to any of them builds a new image. Needs podman and mmdebstrap (run as root).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SERVER="$HERE/images/pyservice/server.py"
PODMAN="${PODMAN:-podman}"
SUITE="bookworm"
MIRROR="${JANCTION_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# python3-minimal has the interpreter; libpython3.11-stdlib has asyncio, json, hashlib, http...
PACKAGES="python3-minimal,libpython3.11-stdlib"
CACHE="${JANCTION_IMAGE_CACHE:-${HOME:-/root}/.cache/janction/images}"

HASH="$(cat "${BASH_SOURCE[0]}" "$SERVER" <(echo "$SUITE $PACKAGES") | sha256sum | cut -c1-12)"
IMAGE="localhost/janction-pyservice:$HASH"

if "$PODMAN" image exists "$IMAGE"; then
  echo "$IMAGE"
  exit 0
fi
for tool in "$PODMAN" mmdebstrap; do
  if ! command -v "$tool" >/dev/null; then
    echo "$tool is needed to build $IMAGE: apt-get install podman mmdebstrap (or bash scripts/install-system-deps.sh)" >&2
    exit 1
  fi
done
mkdir -p "$CACHE"
TARBALL="$CACHE/pyservice-$HASH.tar"
# Several test runs may build at once: one builds, the others wait and reuse its tarball.
exec 9>"$CACHE/pyservice.lock"
flock 9
if ! "$PODMAN" image exists "$IMAGE"; then
  if [ ! -s "$TARBALL" ]; then
    ROOTFS="$(mktemp -d "${TMPDIR:-/tmp}/janction-pyservice-XXXXXX")"
    trap 'rm -rf "$ROOTFS" "$TARBALL.partial"' EXIT
    started=$(date +%s)
    # extract: unpack the packages and their dependencies, run no maintainer scripts (nothing needs them).
    if ! mmdebstrap --quiet --mode=root --variant=extract --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >&2; then
      echo "mmdebstrap could not build the root filesystem from $MIRROR (set JANCTION_DEBIAN_MIRROR to a reachable mirror)" >&2
      exit 1
    fi
    rm -rf "$ROOTFS"/usr/share/{doc,man,info,locale,lintian} "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/lib/apt/lists/*
    mkdir -p "$ROOTFS"/{opt/pyservice,tmp,proc,sys,dev,etc}
    chmod 1777 "$ROOTFS/tmp"
    install -m 0644 "$SERVER" "$ROOTFS/opt/pyservice/server.py"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' > "$ROOTFS/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$ROOTFS/etc/group"
    tar -C "$ROOTFS" --sort=name --numeric-owner -cf "$TARBALL.partial" .
    mv "$TARBALL.partial" "$TARBALL"
    echo "built the root filesystem in $(( $(date +%s) - started )) s: $TARBALL" >&2
  fi
  "$PODMAN" import --quiet \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
    --change 'ENV PYTHONUNBUFFERED=1' \
    --change 'USER 65534:65534' \
    --change 'WORKDIR /tmp' \
    --change 'EXPOSE 8000' \
    --change 'CMD ["python3", "/opt/pyservice/server.py"]' \
    "$TARBALL" "$IMAGE" >/dev/null
fi
echo "$IMAGE"
