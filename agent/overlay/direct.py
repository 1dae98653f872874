"""Direct host-to-host WireGuard paths, with the hub's relay as the fallback, and the host's own VxLAN filter.

Every host dials the hub; every segment packet used to cross it (decrypted and encrypted again there). When
the control plane names a segment's other hosts as peers (public key, the endpoint the hub saw it at, overlay
address), the agent adds each as a WireGuard peer *without* allowed IPs and a persistent keepalive, which
starts a handshake at once. Traffic still goes through the hub meanwhile (the hub peer holds the whole overlay
network). When the handshake completes (both sides add each other, so both see it) the peer gets its overlay
`/32`: WireGuard's longest-prefix routing then sends that host's VxLAN straight to it, and accepts packets
from that address only from that key. A peer whose handshake does not complete within DIRECT_HANDSHAKE_SECONDS
(a host behind a NAT nobody can dial) is removed and stays relayed; it is tried again every RETRY_SECONDS (a
trial leaves the relayed traffic alone: the peer gets its /32 only once a handshake completed), and at once when
the platform names another endpoint for it. A direct peer from which nothing (not even a keepalive) arrived for
two keepalive intervals goes back to the relay.
Peers that no live segment names any more are removed.

A direct path bypasses the hub's nftables, so each host filters what arrives on its WireGuard interface
itself (`host_ruleset`): VxLAN only from a host it shares a segment with and only with that segment's VNI
(both from the segment messages of its own placements), anything from the hub's address, nothing else;
nothing is forwarded from the overlay to the host's other interfaces.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from agent.overlay.net import Net, interface_name, ipv4, ipv4_endpoint, wg_key

log = logging.getLogger(__name__)

# WireGuard sends a handshake initiation again only after REKEY_TIMEOUT (5 s). The two hosts add each other a few
# milliseconds apart, so the earlier one's first initiation can reach a host that does not know its key yet (dropped
# silently); its next comes 5 s later. 12 s leaves room for two retries (5 s failed in the lab under load).
DIRECT_HANDSHAKE_SECONDS = 12.0
# Both sides of a direct path send a keepalive at least every keepalive interval, so a direct peer from which
# nothing arrived for two intervals and this margin is gone (its host fell back, or moved): back to the hub.
QUIET_MARGIN_SECONDS = 5.0
# A relayed pair tries the direct path again this often: the two hosts fell back at about the same moment, so their
# retries overlap; one whose peer went direct alone (a handshake answer lost at the deadline) heals the cut with it.
RETRY_SECONDS = 60.0
VXLAN_PORT = 4789

TRYING, DIRECT, RELAY = "trying", "direct", "relay"


@dataclass
class PeerPath:
    """One other host: how this host reaches it now."""

    public_key: str
    endpoint: str
    address: str
    state: str
    since: float  # wall-clock time the state began
    received: int = 0  # bytes received from it, as WireGuard last counted them
    heard: float = 0.0  # wall-clock time that count last grew


class DirectPeers:
    """The direct peers of one WireGuard interface (all calls under the caller's lock)."""

    def __init__(self, *, net: Net, interface: str, keepalive_seconds: int = 25) -> None:
        self._net = net
        self._interface = interface_name(interface)
        self._keepalive = keepalive_seconds
        self._paths: dict[str, PeerPath] = {}  # overlay address -> path

    def paths(self) -> dict[str, str]:
        """Return overlay address -> "trying" | "direct" | "relay"."""
        return {address: path.state for address, path in self._paths.items()}

    @property
    def trying(self) -> bool:
        return any(path.state == TRYING for path in self._paths.values())

    def forget(self) -> None:
        """Drop what we know (the interface was rebuilt without its peers); the next sync starts over."""
        self._paths.clear()

    def sync(self, wanted: Iterable[tuple[str, str, str]], *, hub_public_key: str, keepalive_seconds: int) -> None:
        """Make the interface's peers the hub plus the wanted (key, endpoint, address) ones; start trials."""
        self._keepalive = keepalive_seconds
        desired: dict[str, tuple[str, str]] = {}
        keys: set[str] = set()
        for key, endpoint, address in wanted:
            # The hub's key would lose the hub its allowed IPs; one key for two hosts would move a /32 between them.
            if wg_key(key) == hub_public_key or key in keys:
                log.warning("overlay: ignoring direct peer %s: its key is the hub's or another host's", address)
                continue
            desired[ipv4(address)] = (key, ipv4_endpoint(endpoint))
            keys.add(key)
        for address, path in list(self._paths.items()):
            if desired.get(address, (None, None))[0] != path.public_key:
                self._remove(path.public_key)
                del self._paths[address]
                log.info("overlay: direct peer %s removed", address)
        for key in self._net.wg("show", self._interface, "peers").stdout.split():
            if key != hub_public_key and key not in keys:
                self._remove(key)
        now = time.time()
        for address, (key, endpoint) in desired.items():
            path = self._paths.get(address)
            if path is not None and (path.state != RELAY or path.endpoint == endpoint):
                continue
            # New, or relayed and now announced at another endpoint: try a handshake.
            self._try(PeerPath(key, endpoint, address, TRYING, now))

    def _try(self, path: PeerPath) -> None:
        """Add the peer without allowed IPs, with a keepalive (it starts a handshake at once); record the trial."""
        self._net.wg(
            "set", self._interface, "peer", path.public_key, "endpoint", path.endpoint,
            "persistent-keepalive", str(self._keepalive), "allowed-ips", "",
        )  # fmt: skip
        path.state, path.since = TRYING, time.time()
        self._paths[path.address] = path
        log.info("overlay: trying a direct path to %s at %s", path.address, path.endpoint)

    def poll(self) -> bool:
        """Promote peers whose handshake completed, give up on the rest after the deadline; return whether changed."""
        if not self._paths:
            return False
        # Not `wg show dump`: its first line holds the private key.
        handshakes = self._numbers("latest-handshakes")
        received = self._numbers("transfer") if any(p.state == DIRECT for p in self._paths.values()) else {}
        now = time.time()
        quiet = 2 * self._keepalive + QUIET_MARGIN_SECONDS
        changed = False
        for path in self._paths.values():
            stamp = handshakes.get(path.public_key, 0)
            count = received.get(path.public_key, 0)
            if path.state == TRYING and stamp:
                self._net.wg("set", self._interface, "peer", path.public_key, "allowed-ips", f"{path.address}/32")
                log.info("overlay: direct path to %s (%s) after %.2f s", path.address, path.endpoint, now - path.since)
                path.state, path.since, changed = DIRECT, now, True
                path.received, path.heard = count, now
            elif path.state == DIRECT and count > path.received:
                path.received, path.heard = count, now
            elif path.state == TRYING and now - path.since > DIRECT_HANDSHAKE_SECONDS:
                self._remove(path.public_key)
                path.state, path.since, changed = RELAY, now, True
                log.info("overlay: no handshake with %s at %s: through the hub", path.address, path.endpoint)
            elif path.state == RELAY and now - path.since > RETRY_SECONDS:
                self._try(path)
                changed = True
            elif path.state == DIRECT and now - path.heard > quiet:
                self._remove(path.public_key)
                path.state, path.since, changed = RELAY, now, True
                log.info("overlay: direct path to %s went quiet: through the hub", path.address)
        return changed

    def _numbers(self, what: str) -> dict[str, int]:
        """Return the first number per peer of `wg show <interface> what` (handshake time, bytes received)."""
        numbers = {}
        for line in self._net.wg("show", self._interface, what, check=False).stdout.splitlines():
            fields = line.split("\t")
            if len(fields) >= 2 and fields[1].isdigit():
                numbers[fields[0]] = int(fields[1])
        return numbers

    def _remove(self, key: str) -> None:
        self._net.wg("set", self._interface, "peer", key, "remove", check=False)


def host_table(prefix: str) -> str:
    """The agent's own nftables table (one per overlay prefix)."""
    return f"janction_{prefix}_host"


def host_ruleset(*, prefix: str, interface: str, hub_address: str, flows: Iterable[tuple[str, int]]) -> str:
    """Return the nft script for this host: from the overlay only the hub and (peer, VNI) VxLAN of live segments."""
    table = host_table(prefix)
    interface = interface_name(interface)
    lines = [
        f"table inet {table}",
        f"delete table inet {table}",
        f"table inet {table} {{",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        f'    iifname "{interface}" jump from_overlay',
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        f'    iifname "{interface}" drop',
        "  }",
        "  chain from_overlay {",
        f"    ip saddr {ipv4(hub_address)} accept",
    ]
    for peer, vni in sorted(set(flows)):
        if not 1 <= int(vni) < 2**24:
            raise ValueError(f"VNI {vni} out of range")
        # The VNI: bytes 4..6 of the VxLAN header after the 8-byte UDP header (bits 96..119), as at the hub.
        lines.append(f"    ip saddr {ipv4(peer)} udp dport {VXLAN_PORT} @th,96,24 {int(vni)} accept")
    lines += ["    counter drop", "  }", "}"]
    return "\n".join(lines) + "\n"
