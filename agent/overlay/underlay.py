"""The WireGuard link to the platform's hub: kernel WireGuard where the host has it, wireguard-go otherwise.

Only the link's creation differs between the two; everything after it (`wg set`, the address, the MTU)
is one code path. The agent dials the hub with a persistent keepalive, so NAT keeps the path open.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.overlay.net import Net, NetError, interface_name, ipv4, wg_key

log = logging.getLogger(__name__)

LINK_WAIT_SECONDS = 10.0
# wireguard-go 0.0.20220316 (Debian 12) leaves its UDP sockets at net.core.rmem_default (208 KiB): a burst of
# VxLAN-in-WireGuard overflows it (UdpRcvbufErrors) and TCP inside the segment collapses on the losses. Newer
# wireguard-go asks for 7 MiB itself; we set the same on its sockets from outside (see tune_socket_buffers).
SOCKET_BUFFER_BYTES = 7 << 20
_SYS_PIDFD_GETFD = 438  # x86-64 and arm64 alike (the generic syscall table)
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # <asm-generic/socket.h>; Python's socket module lacks them


@dataclass(frozen=True)
class UnderlayConfig:
    """What the control plane assigned: this node's overlay address and the hub to dial."""

    address: str
    prefix_length: int
    hub_public_key: str
    hub_endpoint: str
    hub_address: str
    network: str
    keepalive_seconds: int = 25
    mtu: int = 1420

    def validated(self) -> UnderlayConfig:
        """Return self if every field is well formed, else raise ValueError (the gateway's word is checked too)."""
        ipv4(self.address)
        ipv4(self.hub_address)
        wg_key(self.hub_public_key)
        host, _, port = self.hub_endpoint.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c in host for c in " \n,"):
            raise ValueError(f"hub endpoint must be HOST:PORT, got {self.hub_endpoint!r}")
        if not 8 <= self.prefix_length <= 30 or not 1280 <= self.mtu <= 9000 or not 1 <= self.keepalive_seconds <= 600:
            raise ValueError("prefix length, MTU or keepalive out of range")
        network, _, bits = self.network.partition("/")
        ipv4(network)
        if not bits.isdigit():
            raise ValueError(f"overlay network must be a CIDR, got {self.network!r}")
        return self

    def to_json(self) -> dict:
        return asdict(self)


class Underlay:
    """One WireGuard interface, `<prefix>w`, in the agent's network namespace."""

    def __init__(self, *, prefix: str, key_path: Path, kernel: bool, net: Net | None = None) -> None:
        self.name = interface_name(f"{prefix}w")
        self._key_path = key_path
        self._kernel = kernel
        self._net = net or Net()
        self._process: subprocess.Popen | None = None
        self.wireguard_go_pid = 0
        self.config: UnderlayConfig | None = None

    def up(self, config: UnderlayConfig) -> None:
        """Create (if needed) and configure the interface for config."""
        config = config.validated()
        if not self._net.link_exists(self.name):
            self._create()
        self._net.wg(
            "set", self.name,
            "private-key", str(self._key_path),
            "peer", config.hub_public_key,
            "endpoint", config.hub_endpoint,
            "allowed-ips", config.network,
            "persistent-keepalive", str(config.keepalive_seconds),
        )  # fmt: skip
        for peer in self._net.wg("show", self.name, "peers").stdout.split():
            if peer != config.hub_public_key:
                self._net.wg("set", self.name, "peer", peer, "remove")
        wanted = f"{config.address}/{config.prefix_length}"
        for address in self._net.addresses(self.name):
            if address != wanted:
                self._net.ip("addr", "del", address, "dev", self.name)
        if wanted not in self._net.addresses(self.name):
            self._net.ip("addr", "add", wanted, "dev", self.name)
        self._net.ip("link", "set", "dev", self.name, "mtu", str(config.mtu), "up")
        self.config = config
        log.info("overlay underlay %s up: %s, hub %s at %s", self.name, wanted, config.hub_address, config.hub_endpoint)

    def _create(self) -> None:
        if self._kernel:
            self._net.ip("link", "add", "dev", self.name, "type", "wireguard")
            return
        env = {**os.environ, "WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"}
        self._process = subprocess.Popen(
            self._net._wrap(["wireguard-go", "-f", self.name]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self.wireguard_go_pid = self._process.pid
        deadline = time.monotonic() + LINK_WAIT_SECONDS
        while not self._net.link_exists(self.name) or not Path(f"/var/run/wireguard/{self.name}.sock").exists():
            if self._process.poll() is not None:
                raise NetError(f"wireguard-go {self.name} exited with {self._process.returncode}")
            if time.monotonic() > deadline:
                raise NetError(f"wireguard-go did not create {self.name} within {LINK_WAIT_SECONDS:g} s")
            time.sleep(0.05)

    def down(self) -> None:
        """Delete the interface (wireguard-go exits with it) and reap the helper process."""
        self._net.link_delete(self.name)
        stop_wireguard_go(self.name, self.wireguard_go_pid)
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process = None
        self.wireguard_go_pid = 0

    def handshake_age(self) -> float | None:
        """Return seconds since the last handshake with the hub, or None before the first."""
        output = self._net.wg("show", self.name, "latest-handshakes", check=False).stdout.split()
        if len(output) >= 2 and output[1].isdigit() and int(output[1]):
            return max(0.0, time.time() - int(output[1]))
        return None


def stop_wireguard_go(name: str, pid: int) -> None:
    """Stop a wireguard-go left by an earlier run of this agent, only if its command line names our interface."""
    if pid <= 0:
        return
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return
    if b"wireguard-go" in command[0] and name.encode() in command:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
    Path(f"/var/run/wireguard/{name}.sock").unlink(missing_ok=True)


def tune_socket_buffers(pid: int, size: int = SOCKET_BUFFER_BYTES) -> int:
    """Give wireguard-go's UDP sockets size-byte send and receive buffers; return how many sockets it changed.

    wireguard-go has no setting for it, so the agent takes a duplicate of each of the process's UDP socket
    descriptors (pidfd_getfd, Linux 5.6+, needs ptrace rights over it: its parent has them under Yama's default
    scope, else root or CAP_SYS_PTRACE) and sets
    SO_RCVBUFFORCE/SO_SNDBUFFORCE (CAP_NET_ADMIN) on it: the buffer belongs to the socket, which both
    descriptors share. Best effort: on any failure the link works as before, only slower.
    """
    if pid <= 0:
        return 0
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
                if sock.type != socket.SOCK_DGRAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
                    sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, size)
                    changed += 1
                except OSError:
                    continue
    finally:
        os.close(pidfd)
    return changed
