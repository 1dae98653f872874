"""The overlay hub's data plane (docs/overlay.md): one WireGuard interface and one nftables table.

No Django here: `manage.py overlay_hub` reads the desired state from the database
(`nodes.services.overlay_hub_state`) and hands it to `HubRunner.apply`. The hub relays VxLAN between the
hosts of a segment by routing it between WireGuard peers; WireGuard's cryptokey routing makes each
packet's source address that of the peer whose key sent it, so the nftables allow-list of
(source host, destination host, VNI) is exact. Everything else that arrives from the overlay is dropped:
no host reaches another host, the hub, the hub's LAN or the internet except as a segment's VxLAN.

The service endpoint (docs/overlay.md, "The service endpoint"): on each segment of a rental that exposes ports
the hub is a member of its own, `<interface[:6]>s<VNI>` with the segment's host .1. Its neighbours are pinned
(each member address to its MAC, derived from the address, and that MAC to the member's host; no learning), a
host's VxLAN to the hub must carry its own members' inner source addresses, and on the link the hub only opens
TCP to the members' exposed ports: containers cannot open anything towards the hub, nor be routed anywhere.
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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

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


class ServiceSegmentLike(Protocol):
    """What the hub needs of a service segment (`nodes.services.overlay.ServiceSegment`)."""

    vni: int
    address: str
    prefix_length: int
    mtu: int
    ports: tuple[int, ...]
    members: tuple[tuple[str, str], ...]  # (segment address, host overlay address)


def segment_mac(address: str) -> str:
    """Return a segment member's MAC: locally administered, 02:6a + its IPv4 address (the agent sets the same)."""
    return "02:6a:" + ":".join(f"{byte:02x}" for byte in ipaddress.IPv4Address(address).packed)


def service_link_prefix(interface: str) -> str:
    """Return the prefix of the hub's service segment links (at most 15 characters with any VNI)."""
    return f"{interface[:6]}s"


def service_link(interface: str, vni: int) -> str:
    return f"{service_link_prefix(interface)}{int(vni)}"


def _hex32(address: str) -> str:
    return f"0x{int(ipaddress.IPv4Address(address)):08x}"


def _service_rules(interface: str, hub_address: str, services: Sequence[ServiceSegmentLike]) -> tuple[list, list]:
    """Return the input and output rules of the service segments (before each chain's final drops)."""
    inputs, outputs = [], []
    hub = ipaddress.IPv4Address(hub_address)
    for service in services:
        vni = int(service.vni)
        if not 1 <= vni < 2**24:
            raise ValueError(f"VNI {vni} out of range")
        link = service_link(interface, vni)
        by_host: dict[str, list[str]] = {}
        for address, host in service.members:
            by_host.setdefault(str(ipaddress.IPv4Address(host)), []).append(str(ipaddress.IPv4Address(address)))
        for host, addresses in sorted(by_host.items()):
            # Outer: that host to the hub on this VNI. Inner (after 8 B UDP, 8 B VxLAN, 14 B Ethernet): IPv4 whose
            # source is one of the host's own members (bits 336..367), or ARP whose sender is one (bits 352..383).
            outer = f'iifname "{interface}" ip saddr {host} ip daddr {hub} udp dport {VXLAN_PORT} @th,96,24 {vni}'
            owned = "{ " + ", ".join(_hex32(a) for a in sorted(addresses)) + " }"
            inputs.append(f"    {outer} @th,224,16 0x0800 @th,336,32 {owned} accept")
            inputs.append(f"    {outer} @th,224,16 0x0806 @th,352,32 {owned} accept")
        inputs.append(f'    iifname "{link}" ct state established,related accept')
        ports = sorted({int(p) for p in service.ports if 0 < int(p) < 65536})
        addresses = sorted({str(ipaddress.IPv4Address(a)) for a, _ in service.members})
        if ports and addresses:
            members, opened = ", ".join(addresses), ", ".join(map(str, ports))
            outputs.append(f'    oifname "{link}" ip daddr {{ {members} }} tcp dport {{ {opened} }} accept')
    return inputs, outputs


def table_name(interface: str) -> str:
    """Return the hub's nftables table: one per hub interface, never shared with anything else."""
    return "janction_" + interface.replace("-", "_")


def render_ruleset(
    *,
    interface: str,
    flows: Iterable[tuple[str, str, int]],
    services: Sequence[ServiceSegmentLike] = (),
    hub_address: str = "",
) -> str:
    """Return the nft script that replaces the hub's table with one allowing exactly these flows and services."""
    table = table_name(interface)
    links = service_link_prefix(interface) + "*"
    service_inputs, service_outputs = _service_rules(interface, hub_address, services) if services else ([], [])
    lines = [f"table inet {table}", f"delete table inet {table}", f"table inet {table} {{"]
    lines += [
        "  counter claims_refused {",
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        f'    iifname "{interface}" jump from_overlay',
        f'    oifname "{interface}" drop',
        # A service segment is an end, never a way through: nothing is routed from or to one.
        f'    iifname "{links}" drop',
        f'    oifname "{links}" drop',
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
        *service_inputs,
        # ARP inside VxLAN to the hub that no rule above took: a host claiming an address it does not own.
        f'    iifname "{interface}" udp dport {VXLAN_PORT} @th,224,16 0x0806 counter name "claims_refused" drop',
        f'    iifname "{interface}" drop',
        f'    iifname "{links}" drop',
        "  }",
        "  chain output {",
        "    type filter hook output priority filter; policy accept;",
        *service_outputs,
        f'    oifname "{links}" ct state established,related accept',
        f'    oifname "{links}" drop',
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
        self._services: dict[str, ServiceSegmentLike] = {}  # service link -> the segment it was built for

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
        missing = [f"the `{b}` command" for b in ("ip", "bridge", "wg", "nft", "nsenter") if shutil.which(b) is None]
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
        for link in self._service_links():  # a previous run's (after kill -9): rebuilt from the database
            self.run("ip", "link", "del", "dev", link, check=False)

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

    def apply(
        self,
        *,
        peers: Iterable[tuple[str, str]],
        flows: Iterable[tuple[str, str, int]],
        services: Sequence[ServiceSegmentLike] = (),
    ) -> bool:
        """Make the peers, the table and the service links match the desired state; return whether anything changed."""
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
        hub_address = self.address.split("/")[0]
        ruleset = render_ruleset(interface=self.interface, flows=flows, services=services, hub_address=hub_address)
        changed = self.apply_ruleset(ruleset) or changed
        return self.apply_services(services) or changed

    def _service_links(self) -> list[str]:
        prefix = service_link_prefix(self.interface)
        output = self.run("ip", "-o", "link", "show").stdout
        names = [line.split(": ")[1].split("@")[0] for line in output.splitlines() if ": " in line]
        return [name for name in names if name.startswith(prefix) and name[len(prefix) :].isdigit()]

    def apply_services(self, services: Sequence[ServiceSegmentLike]) -> bool:
        """Give the hub a member link on each service segment (and only those); return whether anything changed.

        The rules that confine the links are in the table already (apply_ruleset runs first).
        """
        wanted = {service_link(self.interface, s.vni): s for s in services}
        if wanted == self._services:
            return False
        changed = False
        for link in set(self._service_links()) - wanted.keys():
            self.run("ip", "link", "del", "dev", link, check=False)
            self._services.pop(link, None)
            changed = True
        for link, service in wanted.items():
            if self._services.get(link) == service:
                continue
            self.run("ip", "link", "del", "dev", link, check=False)
            self._services.pop(link, None)
            self._service_link_add(link, service)
            self._services[link] = service
            changed = True
        return changed

    def _service_link_add(self, link: str, service: ServiceSegmentLike) -> None:
        local = self.address.split("/")[0]
        self.run(
            "ip", "link", "add", "dev", link, "mtu", str(int(service.mtu)), "type", "vxlan",
            "id", str(int(service.vni)), "local", local, "dstport", str(VXLAN_PORT), "dev", self.interface,
            "nolearning",
        )  # fmt: skip
        self.run("ip", "addr", "add", f"{ipaddress.IPv4Address(service.address)}/{int(service.prefix_length)}",
                 "dev", link)  # fmt: skip
        for address, host in service.members:
            mac = segment_mac(address)
            self.run("bridge", "fdb", "add", mac, "dev", link, "dst", str(ipaddress.IPv4Address(host)), "self",
                     "permanent")  # fmt: skip
            self.run("ip", "neigh", "replace", str(ipaddress.IPv4Address(address)), "lladdr", mac, "dev", link,
                     "nud", "permanent")  # fmt: skip
        # Answer ARP only for the link's own address (not the hub's other addresses).
        self.run("sysctl", "-q", "-w", f"net.ipv4.conf.{link}.arp_ignore=1")
        self.run("ip", "link", "set", "dev", link, "up")

    def apply_ruleset(self, ruleset: str) -> bool:
        if ruleset == self._ruleset:
            return False
        self.run("nft", "-f", "-", input=ruleset)
        self._ruleset = ruleset
        return True

    def stop(self) -> None:
        """Remove the table and the interface (wireguard-go exits with it)."""
        for link in self._service_links():
            self.run("ip", "link", "del", "dev", link, check=False)
        self.run("nft", "delete", "table", "inet", table_name(self.interface), check=False)
        self.run("ip", "link", "del", "dev", self.interface, check=False)
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
