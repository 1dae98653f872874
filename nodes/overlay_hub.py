"""The overlay hub's data plane (docs/overlay.md): one WireGuard interface and one nftables table.

No Django here: `manage.py overlay_hub` reads the desired state from the database
(`nodes.services.overlay_hub_state`) and hands it to `HubRunner.apply`. The hub relays VxLAN between the
hosts of a segment by routing it between WireGuard peers; WireGuard's cryptokey routing makes each
packet's source address that of the peer whose key sent it, so the nftables allow-list of
(source host, destination host, VNI) is exact. Everything else that arrives from the overlay is dropped:
no host reaches another host, the hub, the hub's LAN or the internet except as a segment's VxLAN.
"""

from __future__ import annotations

import base64
import ctypes
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

VXLAN_PORT = 4789
COMMAND_TIMEOUT_SECONDS = 20
INTERFACE = re.compile(r"^[a-z0-9][a-z0-9-]{0,14}$")
WG_KEY = re.compile(r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")
SOCKET_BUFFER_BYTES = 7 << 20
_SYS_PIDFD_GETFD = 438
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33


class HubError(RuntimeError):
    """A hub command failed; the message names it."""


def table_name(interface: str) -> str:
    """Return the hub's nftables table: one per hub interface, never shared with anything else."""
    return "janction_" + interface.replace("-", "_")


def render_ruleset(*, interface: str, flows: Iterable[tuple[str, str, int]]) -> str:
    """Return the nft script that replaces the hub's table with one allowing exactly these flows."""
    table = table_name(interface)
    lines = [f"table inet {table}", f"delete table inet {table}", f"table inet {table} {{"]
    lines += [
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        f'    iifname "{interface}" jump from_overlay',
        f'    oifname "{interface}" drop',
        "  }",
        "  chain from_overlay {",
        f'    oifname != "{interface}" drop',
    ]
    for source, destination, vni in flows:
        ipaddress.IPv4Address(source)
        ipaddress.IPv4Address(destination)
        if not 1 <= int(vni) < 2**24:
            raise ValueError(f"VNI {vni} out of range")
        # The VNI is bytes 4..6 of the VxLAN header, which follows the 8-byte UDP header: bits 96..119.
        lines.append(f"    ip saddr {source} ip daddr {destination} udp dport {VXLAN_PORT} @th,96,24 {int(vni)} accept")
    lines += [
        "    counter drop",
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        f'    iifname "{interface}" icmp type echo-request limit rate 20/second accept',
        f'    iifname "{interface}" drop',
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def tune_socket_buffers(pid: int, size: int = SOCKET_BUFFER_BYTES) -> int:
    """Give wireguard-go's UDP sockets size-byte buffers; return how many it changed (best effort).

    The same as `agent.overlay.underlay.tune_socket_buffers` (why: see there and docs/overlay.md, "Speed"), kept
    here because the Django side imports nothing of the agent but its wire contract.
    """
    changed = 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pidfd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        return 0
    try:
        for entry in os.scandir(f"/proc/{pid}/fd"):
            try:
                if not os.readlink(entry.path).startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = libc.syscall(_SYS_PIDFD_GETFD, pidfd, int(entry.name), 0)
            if fd < 0:
                continue
            try:
                sock = socket.socket(fileno=fd)
            except OSError:
                os.close(fd)
                continue
            with sock:
                if sock.type == socket.SOCK_DGRAM and sock.family in (socket.AF_INET, socket.AF_INET6):
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
                        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, size)
                        changed += 1
                    except OSError:
                        continue
    finally:
        os.close(pidfd)
    return changed


def load_or_create_key(path: Path) -> tuple[Path, str]:
    """Return the hub's private key file (created 0600 when absent) and its public key."""
    if not path.exists():
        raw = X25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(base64.b64encode(raw).decode() + "\n")
    private = X25519PrivateKey.from_private_bytes(base64.b64decode(path.read_text().strip()))
    public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return path, base64.b64encode(public).decode()


class HubRunner:
    """The hub's WireGuard interface and nftables table, in this network namespace or the one at netns."""

    def __init__(self, *, interface: str, key_file: Path, listen_port: int, address: str, prefix_length: int,
                 netns: str | None = None) -> None:  # fmt: skip
        if not INTERFACE.match(interface):
            raise ValueError(f"--interface: not a safe interface name: {interface!r}")
        self.interface = interface
        self.netns = netns
        self.listen_port = listen_port
        self.address = f"{ipaddress.IPv4Address(address)}/{prefix_length}"
        self.key_file, self.public_key = load_or_create_key(key_file)
        self._process: subprocess.Popen | None = None
        self._ruleset = ""

    def _argv(self, *argv: str) -> list[str]:
        return ["nsenter", f"--net={self.netns}", *argv] if self.netns else list(argv)

    def run(self, *argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self._argv(*argv), capture_output=True, text=True, input=input, timeout=COMMAND_TIMEOUT_SECONDS, check=False
        )
        if check and result.returncode != 0:
            raise HubError(f"{' '.join(argv[:6])}: {result.stderr.strip()[-400:] or result.returncode}")
        return result

    @staticmethod
    def missing() -> list[str]:
        """Return what the host lacks to run the hub, in words."""
        missing = [f"the `{b}` command" for b in ("ip", "wg", "nft", "nsenter") if shutil.which(b) is None]
        if shutil.which("wireguard-go") is None and not Path("/sys/module/wireguard").exists():
            missing.append("WireGuard (kernel module or wireguard-go)")
        return missing

    def start(self) -> None:
        """Create the interface (kernel WireGuard, else wireguard-go), key it, address it, enable forwarding."""
        if self.run("ip", "link", "show", "dev", self.interface, check=False).returncode != 0:
            kernel = self.run("ip", "link", "add", "dev", self.interface, "type", "wireguard", check=False)
            if kernel.returncode != 0:
                self._start_wireguard_go()
        self.run("wg", "set", self.interface, "private-key", str(self.key_file), "listen-port", str(self.listen_port))
        self.run("ip", "addr", "replace", self.address, "dev", self.interface)
        self.run("ip", "link", "set", "dev", self.interface, "up")
        deadline = time.monotonic() + 1.0  # wireguard-go opens its sockets once the link is up, on its own time
        while self._process is not None and not self.tune() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        self.apply_ruleset(render_ruleset(interface=self.interface, flows=()))

    def _start_wireguard_go(self) -> None:
        env = {**os.environ, "WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"}
        self._process = subprocess.Popen(
            self._argv("wireguard-go", "-f", self.interface),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not Path(f"/var/run/wireguard/{self.interface}.sock").exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise HubError(f"wireguard-go did not create {self.interface}")
            time.sleep(0.05)

    def tune(self) -> int:
        """Enlarge wireguard-go's UDP socket buffers (`tune_socket_buffers`); 0 with kernel WireGuard."""
        return tune_socket_buffers(self._process.pid) if self._process is not None else 0

    def endpoints(self) -> dict[str, str]:
        """Return each peer's endpoint as the hub sees it (public key -> "HOST:PORT"), peers never heard omitted."""
        result = {}
        for line in self.run("wg", "show", self.interface, "endpoints").stdout.splitlines():
            key, _, endpoint = line.partition("\t")
            if WG_KEY.match(key) and endpoint.strip() not in ("", "(none)"):
                result[key] = endpoint.strip()
        return result

    def apply(self, *, peers: Iterable[tuple[str, str]], flows: Iterable[tuple[str, str, int]]) -> bool:
        """Make the peers and the table match the desired state; return whether anything changed."""
        wanted = {key: address for key, address in peers if WG_KEY.match(key)}
        current = {}
        for line in self.run("wg", "show", self.interface, "allowed-ips").stdout.splitlines():
            key, _, allowed = line.partition("\t")
            current[key] = allowed.strip()
        changed = False
        for key in current.keys() - wanted.keys():
            self.run("wg", "set", self.interface, "peer", key, "remove")
            changed = True
        for key, address in wanted.items():
            allowed = f"{ipaddress.IPv4Address(address)}/32"
            if current.get(key) != allowed:
                self.run("wg", "set", self.interface, "peer", key, "allowed-ips", allowed)
                changed = True
        return self.apply_ruleset(render_ruleset(interface=self.interface, flows=flows)) or changed

    def apply_ruleset(self, ruleset: str) -> bool:
        if ruleset == self._ruleset:
            return False
        self.run("nft", "-f", "-", input=ruleset)
        self._ruleset = ruleset
        return True

    def stop(self) -> None:
        """Remove the table and the interface (wireguard-go exits with it)."""
        self.run("nft", "delete", "table", "inet", table_name(self.interface), check=False)
        self.run("ip", "link", "del", "dev", self.interface, check=False)
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
