#!/usr/bin/env bash
# Build the local busybox image the agent's podman and docker tests run, without any registry pull.
# Idempotent: returns at once when the image exists. Needs podman and busybox-static.
set -euo pipefail
IMAGE="${JANCTION_TEST_IMAGE:-localhost/janction-test-busybox:latest}"
PODMAN="${PODMAN:-podman}"

if "$PODMAN" image exists "$IMAGE"; then
  echo "$IMAGE already exists"
  exit 0
fi
BUSYBOX="${BUSYBOX:-$(command -v busybox || true)}"
if [ -z "$BUSYBOX" ] || ldd "$BUSYBOX" >/dev/null 2>&1; then
  echo "a statically linked busybox is needed: apt-get install busybox-static" >&2
  exit 1
fi
ROOTFS="$(mktemp -d)"
trap 'rm -rf "$ROOTFS"' EXIT
mkdir -p "$ROOTFS"/{bin,dev,etc,proc,sys,tmp}
chmod 1777 "$ROOTFS/tmp"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$ROOTFS/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' > "$ROOTFS/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$ROOTFS/etc/group"
tar -C "$ROOTFS" -c . | "$PODMAN" import --quiet --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
echo "built $IMAGE"
