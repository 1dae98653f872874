"""A rental's VxLAN segment on this host: `<prefix>x<vni>` over the WireGuard link, bridged to the containers.

Per segment and host: one VxLAN device (local = this node's overlay address, head-end replication to the
other hosts of the rental through the hub) and one bridge without an IP address, so the host itself has
no route into the segment. Per placement: a named network namespace for its container and a veth pair,
one end on the bridge, the other as `eth0` inside the namespace with the placement's segment address.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import asdict, dataclass, field

from agent.overlay.net import (
    Net,
    interface_name,
    ipv4,
    ipv4_endpoint,
    netns_add,
    netns_delete,
    netns_exists,
    netns_name,
    wg_key,
)

VXLAN_PORT = 4789
MAX_VNI = 2**24 - 1
MAX_PEERS = 64
HOST_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")


def segment_mac(address: str) -> str:
    """Return a container's MAC on its segment: locally administered, 02:6a + its IPv4 address.

    The hub pins each member's address to this MAC and the MAC to the member's host (it learns nothing from the
    segment), so the service endpoint's traffic to a container goes to that container's host only. The same
    derivation is in `nodes/overlay_hub.py`; a test checks that both agree.
    """
    return "02:6a:" + ":".join(f"{byte:02x}" for byte in ipaddress.IPv4Address(address).packed)


@dataclass(frozen=True)
class SegmentSpec:
    """What the control plane said about one placement's segment."""

    vni: int
    address: str
    prefix_length: int
    mtu: int
    remote_hosts: tuple[str, ...] = ()
    # (name, address) of every container of the rental, this one included.
    names: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    # (public key, endpoint, overlay address) of the other hosts, for direct WireGuard paths (agent/overlay/direct.py).
    peers: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)

    def validated(self) -> SegmentSpec:
        """Return self if well formed, else raise ValueError."""
        if not 1 <= self.vni <= MAX_VNI:
            raise ValueError(f"VNI {self.vni} is out of range")
        ipv4(self.address)
        if not 8 <= self.prefix_length <= 30 or not 1280 <= self.mtu <= 9000:
            raise ValueError("segment prefix length or MTU out of range")
        if len(self.remote_hosts) > MAX_PEERS or len(self.names) > MAX_PEERS:
            raise ValueError("too many hosts or names on one segment")
        for host in self.remote_hosts:
            ipv4(host)
        if len(self.peers) > MAX_PEERS:
            raise ValueError("too many direct peers on one segment")
        for key, endpoint, address in self.peers:
            wg_key(key)
            ipv4_endpoint(endpoint)
            if address not in self.remote_hosts:
                raise ValueError(f"direct peer {address} is not one of the segment's hosts")
        if len({address for _, _, address in self.peers}) < len(self.peers):
            raise ValueError("two direct peers for one host")
        network = ipaddress.IPv4Network(f"{self.address}/{self.prefix_length}", strict=False)
        for name, address in self.names:
            if not name or len(name) > 63 or not set(name) <= HOST_NAME_CHARS:
                raise ValueError(f"segment name {name!r} is not a host name")
            if ipaddress.IPv4Address(address) not in network:
                raise ValueError(f"segment name {name} points outside the segment ({address})")
        return self

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SegmentSpec:
        return cls(
            vni=int(data["vni"]),
            address=data["address"],
            prefix_length=int(data["prefix_length"]),
            mtu=int(data["mtu"]),
            remote_hosts=tuple(data.get("remote_hosts", ())),
            names=tuple((n, a) for n, a in data.get("names", ())),
            peers=tuple((k, e, a) for k, e, a in data.get("peers", ())),
        )


@dataclass(frozen=True)
class PlacementNames:
    """The names this agent uses for one placement's pieces (all derived from its id and the prefix)."""

    netns: str
    veth: str

    @classmethod
    def of(cls, prefix: str, placement_id: str) -> PlacementNames:
        digest = hashlib.sha256(placement_id.encode()).hexdigest()
        return cls(netns=netns_name(f"{prefix}n{digest[:16]}"), veth=interface_name(f"{prefix}v{digest[:8]}"))


class Segments:
    """Build and tear down segments in the agent's network namespace."""

    def __init__(self, *, prefix: str, net: Net | None = None) -> None:
        self._prefix = prefix
        self._net = net or Net()

    def vxlan_name(self, vni: int) -> str:
        return interface_name(f"{self._prefix}x{vni}")

    def bridge_name(self, vni: int) -> str:
        return interface_name(f"{self._prefix}b{vni}")

    def ensure_segment(self, spec: SegmentSpec, *, local_address: str, underlay: str) -> None:
        """Create the segment's VxLAN device and bridge if missing; set its flood list to the other hosts."""
        net, vxlan, bridge = self._net, self.vxlan_name(spec.vni), self.bridge_name(spec.vni)
        if not net.link_exists(bridge):
            net.ip("link", "add", "dev", bridge, "type", "bridge")
            net.ip("link", "set", "dev", bridge, "mtu", str(spec.mtu), "up")
        if not net.link_exists(vxlan):
            net.ip(
                "link", "add", "dev", vxlan, "mtu", str(spec.mtu), "type", "vxlan", "id", str(spec.vni),
                "local", ipv4(local_address), "dstport", str(VXLAN_PORT), "dev", underlay,
            )  # fmt: skip
            net.ip("link", "set", "dev", vxlan, "master", bridge, "up")
        existing = net.bridge("fdb", "show", "dev", vxlan).stdout
        for host in spec.remote_hosts:
            if f"00:00:00:00:00:00 dst {host} " not in existing:
                net.bridge("fdb", "append", "00:00:00:00:00:00", "dev", vxlan, "dst", ipv4(host))

    def attach(self, placement_id: str, spec: SegmentSpec) -> PlacementNames:
        """Give the placement its namespace with `eth0` on the segment; return the names (idempotent)."""
        names = PlacementNames.of(self._prefix, placement_id)
        net, bridge = self._net, self.bridge_name(spec.vni)
        if not netns_exists(names.netns):
            netns_add(names.netns)
        inside = Net(f"/run/netns/{names.netns}")
        if not net.link_exists(names.veth):
            inside.link_delete("eth0")
            net.ip(
                "link", "add", "dev", names.veth, "mtu", str(spec.mtu), "type", "veth",
                "peer", "name", "eth0", "mtu", str(spec.mtu), "address", segment_mac(spec.address),
                "netns", names.netns,
            )  # fmt: skip
        net.ip("link", "set", "dev", names.veth, "master", bridge, "up")
        wanted = f"{spec.address}/{spec.prefix_length}"
        if wanted not in inside.addresses("eth0"):
            inside.ip("addr", "add", wanted, "dev", "eth0")
        inside.ip("link", "set", "dev", "eth0", "up")
        return names

    def detach(self, placement_id: str) -> None:
        """Delete the placement's namespace and veth (the pair goes with either end)."""
        names = PlacementNames.of(self._prefix, placement_id)
        self._net.link_delete(names.veth)
        netns_delete(names.netns)

    def remove_segment(self, vni: int) -> None:
        """Delete the segment's VxLAN device and bridge."""
        self._net.link_delete(self.vxlan_name(vni))
        self._net.link_delete(self.bridge_name(vni))
