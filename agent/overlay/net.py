"""A small typed wrapper around `ip`, `bridge`, `wg`, `nft` and `nsenter` (argument lists, never a shell).

`Net(netns=None)` works in the caller's network namespace; `Net(netns="/run/netns/x")` runs every command
inside that namespace through `nsenter --net=...` (only the network namespace: podman and cgroups still see
the host's mounts, which `ip netns exec` would hide).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from dataclasses import dataclass

COMMAND_TIMEOUT_SECONDS = 20
# Linux interface names: at most 15 bytes; we only ever make names from this alphabet.
INTERFACE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,14}$")
NETNS_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
WG_KEY = re.compile(r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")


class NetError(RuntimeError):
    """A network command failed; the message names the command and what it printed."""


def interface_name(value: str) -> str:
    """Return value if it is a safe interface name, else raise ValueError."""
    if not INTERFACE_NAME.match(value):
        raise ValueError(f"not a safe interface name: {value!r}")
    return value


def netns_name(value: str) -> str:
    """Return value if it is a safe network namespace name, else raise ValueError."""
    if not NETNS_NAME.match(value):
        raise ValueError(f"not a safe network namespace name: {value!r}")
    return value


def wg_key(value: str) -> str:
    """Return value if it is a base64 WireGuard key (32 bytes), else raise ValueError."""
    if not WG_KEY.match(value):
        raise ValueError("not a WireGuard public key (44 characters of base64)")
    return value


def ipv4(value: str) -> str:
    """Return value if it is a plain IPv4 address, else raise ValueError."""
    return str(ipaddress.IPv4Address(value))


def ipv4_endpoint(value: str) -> str:
    """Return value if it is "IPv4:port" (a WireGuard endpoint we dial), else raise ValueError."""
    host, _, port = value.rpartition(":")
    ipv4(host)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not an IPv4 endpoint HOST:PORT: {value!r}")
    return value


@dataclass(frozen=True)
class Link:
    name: str
    kind: str
    master: str


class Net:
    """Run network commands, in the current namespace or in one named by its path."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

    def _wrap(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--net={self.netns}", *argv] if self.netns else argv

    def run(self, *argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run one command; raise NetError with its stderr when it fails and check is set."""
        command = self._wrap(list(argv))
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, input=input, timeout=COMMAND_TIMEOUT_SECONDS, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NetError(f"{' '.join(argv[:4])}: {exc}") from exc
        if check and result.returncode != 0:
            raise NetError(f"{' '.join(argv)}: {result.stderr.strip()[-400:] or f'exit {result.returncode}'}")
        return result

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `ip ARGS`."""
        return self.run("ip", *args, check=check)

    def links(self, prefix: str = "") -> list[Link]:
        """Return the links whose names start with prefix."""
        output = self.ip("-j", "-d", "link", "show").stdout or "[]"
        links = []
        for item in json.loads(output):
            name = item.get("ifname", "")
            if name.startswith(prefix):
                kind = (item.get("linkinfo") or {}).get("info_kind", "")
                links.append(Link(name=name, kind=kind, master=item.get("master", "")))
        return links

    def link_exists(self, name: str) -> bool:
        """Return whether a link of that name exists."""
        return self.ip("link", "show", "dev", interface_name(name), check=False).returncode == 0

    def link_delete(self, name: str) -> bool:
        """Delete a link if it exists; return whether it did."""
        return self.ip("link", "del", "dev", interface_name(name), check=False).returncode == 0

    def addresses(self, name: str) -> list[str]:
        """Return the IPv4 addresses (CIDR) of a link."""
        output = self.ip("-j", "-4", "addr", "show", "dev", interface_name(name)).stdout or "[]"
        return [f"{a['local']}/{a['prefixlen']}" for item in json.loads(output) for a in item.get("addr_info", [])]

    def bridge(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `bridge ARGS`."""
        return self.run("bridge", *args, check=check)

    def wg(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `wg ARGS`."""
        return self.run("wg", *args, check=check, input=input)

    def nft(self, script: str) -> None:
        """Apply an nft script atomically (`nft -f -`)."""
        self.run("nft", "-f", "-", input=script)

    def sysctl(self, key: str, value: str) -> None:
        """Set a sysctl in this namespace (net.* keys are per namespace)."""
        self.run("sysctl", "-q", "-w", f"{key}={value}")


def netns_add(name: str) -> str:
    """Create a named network namespace with lo up; return its path."""
    netns_name(name)
    Net().ip("netns", "add", name)
    path = f"/run/netns/{name}"
    Net(path).ip("link", "set", "lo", "up")
    return path


def netns_delete(name: str) -> bool:
    """Delete a named network namespace if it exists; return whether it did."""
    return Net().ip("netns", "del", netns_name(name), check=False).returncode == 0


def netns_exists(name: str) -> bool:
    """Return whether /run/netns/<name> exists."""
    return os.path.exists(f"/run/netns/{netns_name(name)}")
