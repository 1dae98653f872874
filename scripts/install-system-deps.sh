#!/usr/bin/env bash
# Install the Debian packages the tests need (container runtime, sandbox, browser, WeasyPrint's Pango and fonts for
# the PDF statements, the overlay network), only when missing.
set -euo pipefail

PACKAGES=(podman runc catatonit bubblewrap busybox-static chromium chromium-driver mmdebstrap nftables
  libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core wireguard-go wireguard-tools)
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: ${missing[*]}; run as root or install them: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "Installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
