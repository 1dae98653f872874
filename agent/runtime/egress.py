"""Internet egress for a container, without the provider's LAN or the host's own services (podman only).

By default no workload has a network (`--network none`). When a rental asks for internet egress and the
agent runs with `--allow-egress`, the placement gets its own podman bridge network, and one nftables table
(`inet janction_egress`, separate from podman's and anybody else's rules) rejects, for every packet that
enters the host from one of those bridges:

- anything addressed to the host itself (input hook): no host services, whatever address they listen on;
- anything forwarded to a private, shared, link-local, loopback, multicast or reserved IPv4 range, or to a
  subnet the host is directly attached to (the provider's LAN, even when it uses public addresses), which
  also keeps two placements' bridges apart;
- all IPv6 (the bridges are IPv4 only).

Everything else is forwarded and masqueraded by podman as usual. DNS goes to public resolvers (`--dns`), since
the host's resolver is a host service or on the LAN. The directly attached subnets are read from the routing
table each time a placement's bridge is added; a LAN that changes later is picked up by the next one.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import threading
from dataclasses import dataclass

NFT_TIMEOUT_SECONDS = 30
BLOCKED_RANGES = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
PUBLIC_DNS = ("1.1.1.1", "9.9.9.9")


class EgressUnavailable(RuntimeError):
    """The egress rules could not be put in place; the placement must not start with a network."""


def connected_subnets() -> list[str]:
    """Return the IPv4 subnets the host is directly attached to (scope link routes of the main table)."""
    result = subprocess.run(
        ["ip", "-j", "-4", "route", "show", "scope", "link"],
        capture_output=True,
        text=True,
        timeout=NFT_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        raise EgressUnavailable(f"cannot read the routing table: {result.stderr.strip()[-300:]}")
    subnets = []
    for route in json.loads(result.stdout or "[]"):
        destination = route.get("dst", "")
        try:
            subnets.append(str(ipaddress.ip_network(destination, strict=False)))
        except ValueError:
            continue  # "default" and the like
    return subnets


def blocked_networks(extra: list[str]) -> list[str]:
    """Return the blocked ranges plus `extra`, merged into non-overlapping networks (nft refuses overlaps)."""
    networks = [ipaddress.ip_network(text, strict=False) for text in (*BLOCKED_RANGES, *extra)]
    v4 = [network for network in networks if isinstance(network, ipaddress.IPv4Network)]
    return [str(network) for network in ipaddress.collapse_addresses(v4)]


def _quoted(name: str) -> str:
    if not name or any(not (char.isalnum() or char in "_-.") for char in name) or len(name) > 15:
        raise EgressUnavailable(f"unexpected interface name {name!r}")
    return f'"{name}"'


def table_definition(table: str) -> str:
    """Return the nft script that creates the table (sets empty) when it does not exist yet."""
    return f"""
table inet {table} {{
  set bridges {{ type ifname; }}
  set blocked {{ type ipv4_addr; flags interval; }}
  chain input {{
    type filter hook input priority filter - 10; policy accept;
    iifname @bridges counter reject with icmpx type admin-prohibited
  }}
  chain forward {{
    type filter hook forward priority filter - 10; policy accept;
    iifname @bridges meta nfproto ipv6 counter reject with icmpx type admin-prohibited
    iifname @bridges ip daddr @blocked counter reject with icmpx type admin-prohibited
  }}
}}
"""


@dataclass(frozen=True)
class EgressPolicy:
    """Where the agent keeps its egress rules and which resolvers egress containers use."""

    table: str = "janction_egress"
    dns: tuple[str, ...] = PUBLIC_DNS

    def __post_init__(self) -> None:
        if not self.table.replace("_", "").isalnum() or len(self.table) > 64:
            raise ValueError("the nftables table name may hold letters, digits and underscores only")


class EgressRules:
    """The agent's nftables table: which bridges it covers and which destinations it rejects."""

    def __init__(self, policy: EgressPolicy, *, binary: str = "nft") -> None:
        self.policy = policy
        self._binary = binary
        self._lock = threading.Lock()

    def _nft(self, script: str) -> None:
        try:
            result = subprocess.run(
                [self._binary, "-f", "-"],
                input=script,
                capture_output=True,
                text=True,
                timeout=NFT_TIMEOUT_SECONDS,
                check=False,
            )
        except FileNotFoundError as exc:
            raise EgressUnavailable("nft is not installed (apt-get install nftables)") from exc
        if result.returncode != 0:
            raise EgressUnavailable(f"nft refused the egress rules: {result.stderr.strip()[-500:]}")

    def allow_bridge(self, interface: str) -> None:
        """Cover a placement's bridge (before its container starts) and refresh the blocked destinations."""
        table = self.policy.table
        blocked = ", ".join(blocked_networks(connected_subnets()))
        with self._lock:
            if not self._exists():
                self._nft(table_definition(table))
            self._nft(
                f"flush set inet {table} blocked\n"
                f"add element inet {table} blocked {{ {blocked} }}\n"
                f"add element inet {table} bridges {{ {_quoted(interface)} }}\n"
            )

    def forget_bridge(self, interface: str) -> None:
        """Stop covering a bridge whose network was removed (nothing if it was not covered)."""
        with self._lock:
            if not self._exists():
                return
            try:
                self._nft(f"delete element inet {self.policy.table} bridges {{ {_quoted(interface)} }}\n")
            except EgressUnavailable:
                pass  # not in the set

    def remove_table(self) -> None:
        """Delete the whole table (tests, and an agent that no longer allows egress)."""
        with self._lock:
            if self._exists():
                self._nft(f"delete table inet {self.policy.table}\n")

    def _exists(self) -> bool:
        try:
            result = subprocess.run(
                [self._binary, "list", "table", "inet", self.policy.table],
                capture_output=True,
                text=True,
                timeout=NFT_TIMEOUT_SECONDS,
                check=False,
            )
        except FileNotFoundError as exc:
            raise EgressUnavailable("nft is not installed (apt-get install nftables)") from exc
        return result.returncode == 0

    def bridges(self) -> set[str]:
        """Return the bridges the table covers now."""
        result = subprocess.run(
            [self._binary, "-j", "list", "set", "inet", self.policy.table, "bridges"],
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT_SECONDS,
            check=False,
        )
        if result.returncode != 0:
            return set()
        for entry in json.loads(result.stdout).get("nftables", []):
            if "set" in entry:
                return set(entry["set"].get("elem", []))
        return set()
