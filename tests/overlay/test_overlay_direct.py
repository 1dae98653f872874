"""Direct host-to-host paths (docs/overlay.md, "Direct paths"): hub a b c d as network namespaces, the agent's
own OverlayHost on a, b and c, the hub's HubRunner (no platform: the segment messages are written here as the
control plane would send them). Segment 1 spans a and b, segment 2 b and c, segment 3 a and c.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from agent.overlay import direct, keys
from agent.overlay.direct import DIRECT_HANDSHAKE_SECONDS, host_table
from agent.overlay.host import OverlayHost
from agent.overlay.net import Net
from agent.overlay.segments import PlacementNames, SegmentSpec
from agent.overlay.underlay import Underlay, UnderlayConfig
from nodes.overlay_hub import HubRunner
from tests.overlay.lab import Lab, missing_prerequisites, sh

pytestmark = pytest.mark.slow
ADDRESSES = {"a": "100.64.0.2", "b": "100.64.0.3", "c": "100.64.0.4"}
HUB = "100.64.0.1"


class Overlay:
    def __init__(self, lab: Lab, hub: HubRunner, hosts: dict[str, OverlayHost], work: Path) -> None:
        self.lab, self.hub, self.hosts, self.work = lab, hub, hosts, work
        self.flows: list[tuple[str, str, int]] = []

    def segment(self, vni: int, first: str, second: str) -> dict[str, str]:
        """Put one placement of each of the two hosts on segment vni (with direct peers); return their netns."""
        endpoints = self.hub.endpoints()
        names = ((f"w{vni}-0", f"10.128.{vni}.10"), (f"w{vni}-1", f"10.128.{vni}.11"))
        self.flows += [(ADDRESSES[first], ADDRESSES[second], vni), (ADDRESSES[second], ADDRESSES[first], vni)]
        self.hub.apply(peers=[(h.public_key, ADDRESSES[r]) for r, h in self.hosts.items()], flows=self.flows)
        netns = {}
        for role, other, own in ((first, second, names[0][1]), (second, first, names[1][1])):
            key = self.hosts[other].public_key
            peer = (key, endpoints[key], ADDRESSES[other])
            spec = SegmentSpec(vni, own, 24, 1370, (ADDRESSES[other],), names, (peer,))
            self.hosts[role].placement_up(f"{role}-{vni}", spec)
            netns[role] = PlacementNames.of(f"{self.lab.prefix}{role}", f"{role}-{vni}").netns
        return netns

    def wg(self, role: str, *args: str) -> str:
        return sh("wg", "show", f"{self.lab.prefix}{role}w", *args, netns=self.lab.hosts[role]).stdout

    def dropped(self, role: str) -> int:
        chain = sh("nft", "list", "chain", "inet", host_table(f"{self.lab.prefix}{role}"), "from_overlay",
                   netns=self.lab.hosts[role]).stdout  # fmt: skip
        return int(re.search(r"counter packets (\d+)", chain).group(1))


def _ping(netns: str, address: str, count: int = 1, size: int = 56) -> bool:
    # -A: the next echo as soon as the reply arrives (not one a second); -w: give up after 3 s in all.
    argv = ["busybox", "ping", "-A", "-c", str(count), "-s", str(size), "-W", "2", "-w", "3", address]
    return sh(*argv, netns=netns, check=False).returncode == 0


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture(scope="module")
def overlay(tmp_path_factory):
    if missing := missing_prerequisites():
        pytest.fail("the overlay test needs: " + "; ".join(missing))
    work: Path = tmp_path_factory.mktemp("direct")
    lab = Lab().create(["hub", "a", "b", "c", "d"])
    hub = HubRunner(interface=f"{lab.prefix}hub", key_file=work / "hub.key", listen_port=51820, address=HUB,
                    prefix_length=16, netns=f"/run/netns/{lab.hosts['hub']}")  # fmt: skip
    hosts: dict[str, OverlayHost] = {}
    try:
        hub.start()
        for role in ADDRESSES:
            (work / role).mkdir()
            hosts[role] = OverlayHost(
                state_dir=work / role, prefix=f"{lab.prefix}{role}", net=Net(f"/run/netns/{lab.hosts[role]}")
            )
        hub.apply(peers=[(h.public_key, ADDRESSES[r]) for r, h in hosts.items()], flows=[])
        for role, host in hosts.items():
            host.configure(
                UnderlayConfig(address=ADDRESSES[role], prefix_length=16, hub_public_key=hub.public_key,
                               hub_endpoint=f"{lab.addresses['hub']}:51820", hub_address=HUB,
                               network="100.64.0.0/16", keepalive_seconds=5)
            )  # fmt: skip
        _wait(lambda: len(hub.endpoints()) == 3, 30, "every host's handshake with the hub")
        yield Overlay(lab, hub, hosts, work)
    finally:
        for host in hosts.values():
            host.shutdown()
        hub.stop()
        lab.destroy()


def test_hosts_of_a_segment_go_direct_and_accept_only_its_vni_from_each_other(overlay):
    a, b, c = (ADDRESSES[r] for r in "abc")
    one = overlay.segment(1, "a", "b")
    two = overlay.segment(2, "b", "c")
    _wait(lambda: overlay.hosts["a"].paths() == {b: "direct"}, 10, f"a -> b direct: {overlay.hosts['a'].paths()}")
    _wait(lambda: overlay.hosts["b"].paths() == {a: "direct", c: "direct"}, 10, f"b: {overlay.hosts['b'].paths()}")
    assert f"{b}/32" in overlay.wg("a", "allowed-ips")
    assert _ping(one["a"], "10.128.1.11") and _ping(two["c"], "10.128.2.10")

    # The segment's packets no longer cross the hub: its counters for a grow by keepalives at most.
    def hub_bytes_from_a() -> int:
        transfer = sh("wg", "show", overlay.hub.interface, "transfer", netns=overlay.lab.hosts["hub"]).stdout
        return next(int(line.split("\t")[1]) for line in transfer.splitlines() if overlay.hosts["a"].public_key in line)

    before = hub_bytes_from_a()
    assert _ping(one["a"], "10.128.1.11", count=20, size=1000)
    assert hub_bytes_from_a() - before < 2_000

    # Attack: c is b's direct peer (segment 2) but not on segment 1; VxLAN with VNI 1 sent straight to b is
    # dropped by b's own filter (the hub never sees it), so c reaches nothing of segment 1.
    lab, evil = overlay.lab, f"{overlay.lab.prefix}ev"
    sh("ip", "link", "add", evil, "mtu", "1370", "type", "vxlan", "id", "1", "local", c, "remote", b, "dstport",
       "4789", "dev", f"{lab.prefix}cw", netns=lab.hosts["c"])  # fmt: skip
    sh("ip", "addr", "add", "10.128.1.99/24", "dev", evil, netns=lab.hosts["c"])
    sh("ip", "link", "set", evil, "up", netns=lab.hosts["c"])
    dropped = overlay.dropped("b")
    assert not _ping(lab.hosts["c"], "10.128.1.11", count=2)
    assert overlay.dropped("b") > dropped, "the VNI-1 packets from c reached b and were dropped there"
    sh("ip", "link", "del", evil, netns=lab.hosts["c"])

    # Attack: a key the platform never announced (d claims a's overlay address) gets no handshake with b.
    keys.load_or_create(overlay.work / "d.key")
    d = Underlay(prefix=f"{lab.prefix}d", key_path=overlay.work / "d.key", kernel=False,
                 net=Net(f"/run/netns/{lab.hosts['d']}"))  # fmt: skip
    try:
        d.up(UnderlayConfig(address=a, prefix_length=16, hub_public_key=overlay.hosts["b"].public_key,
                            hub_endpoint=overlay.hub.endpoints()[overlay.hosts["b"].public_key], hub_address=b,
                            network="100.64.0.0/16", keepalive_seconds=1))  # fmt: skip
        assert not _ping(lab.hosts["d"], b, count=2)
        assert d.handshake_age() is None
    finally:
        d.down()

    # A segment's end removes the peers no other segment needs: a keeps only the hub, b keeps c.
    overlay.hosts["a"].placement_down("a-1")
    overlay.hosts["b"].placement_down("b-1")
    assert overlay.wg("a", "peers").split() == [overlay.hub.public_key]
    assert overlay.hosts["b"].paths() == {c: "direct"}
    assert sorted(overlay.wg("b", "peers").split()) == sorted([overlay.hub.public_key, overlay.hosts["c"].public_key])
    assert _ping(two["b"], "10.128.2.11")


def test_hosts_that_cannot_reach_each_other_stay_relayed_through_the_hub_and_retry(overlay, monkeypatch):
    lab, a, c = overlay.lab, ADDRESSES["a"], ADDRESSES["c"]
    block = f"""table inet {lab.prefix}block {{
      chain output {{ type filter hook output priority filter; ip daddr {lab.addresses["c"]} drop; }}
      chain input {{ type filter hook input priority filter; ip saddr {lab.addresses["c"]} drop; }}
    }}"""
    Net(f"/run/netns/{lab.hosts['a']}").nft(block)
    three = overlay.segment(3, "a", "c")
    assert _ping(three["a"], "10.128.3.11"), "reachable through the hub while the direct handshake is tried"
    _wait(lambda: overlay.hosts["a"].paths().get(c) == "relay" and overlay.hosts["c"].paths().get(a) == "relay",
          DIRECT_HANDSHAKE_SECONDS + 5, f"a and c fall back: {overlay.hosts['a'].paths()}")  # fmt: skip
    assert overlay.hosts["c"].public_key not in overlay.wg("a", "peers")
    assert _ping(three["a"], "10.128.3.11", count=3)

    # Once they can reach each other again, the periodic retry (RETRY_SECONDS, a minute; 1 s here) goes direct.
    monkeypatch.setattr(direct, "RETRY_SECONDS", 1.0)
    sh("nft", "delete", "table", "inet", f"{lab.prefix}block", netns=lab.hosts["a"])
    _wait(lambda: overlay.hosts["a"].paths().get(c) == "direct" and overlay.hosts["c"].paths().get(a) == "direct",
          DIRECT_HANDSHAKE_SECONDS + 10, f"a and c retry: {overlay.hosts['a'].paths()}")  # fmt: skip
    assert f"{c}/32" in overlay.wg("a", "allowed-ips")
    assert _ping(three["a"], "10.128.3.11", count=3)


def test_a_restarted_agent_listens_on_its_previous_port_so_its_peers_still_reach_it(overlay):
    lab, state = overlay.lab, overlay.work / "restart"
    state.mkdir()
    config = UnderlayConfig(
        address="100.64.0.9", prefix_length=16, hub_public_key=overlay.hub.public_key,
        hub_endpoint=f"{lab.addresses['hub']}:51820", hub_address=HUB, network="100.64.0.0/16",
    )  # fmt: skip
    ports = []
    for _ in range(2):
        host = OverlayHost(state_dir=state, prefix=f"{lab.prefix}r", net=Net(f"/run/netns/{lab.hosts['d']}"))
        host.cleanup(keep=set())
        host.configure(config)
        ports.append(sh("wg", "show", f"{lab.prefix}rw", "listen-port", netns=lab.hosts["d"]).stdout.strip())
        host.shutdown()
    assert ports[0].isdigit() and ports[0] == ports[1]
