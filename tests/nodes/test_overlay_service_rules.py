"""The endpoint over the overlay (docs/overlay.md, "The service endpoint"): which segments the hub joins, and the
rules it derives for them from the database: a host's VxLAN to the hub carries only its own members' addresses,
the hub opens only the exposed ports, nothing is routed from or to a service segment."""

from __future__ import annotations

import ipaddress

import pytest

from agent.overlay.segments import segment_mac as agent_segment_mac
from janction.errors import ValidationFailed
from marketplace.rentals.dispatch import _overlay_service_ports
from nodes.models import NodePlacement, OverlaySegment
from nodes.overlay_hub import render_ruleset, segment_mac, service_link
from nodes.services import (
    SegmentMember,
    node_quarantine,
    overlay_hub_register,
    overlay_hub_state,
    overlay_segment_allocate,
    overlay_segments_release,
    overlay_service_addresses,
)
from nodes.services.overlay import ServiceSegment, overlay_hub_segment_address, overlay_node_address
from tests.nodes.test_overlay_control_plane import HUB_KEY, nodes  # noqa: F401

HUB = "100.64.0.1"


def _service(key, members, ports=(8080,)):
    return overlay_segment_allocate(
        key=key,
        members=[SegmentMember(node_id=n.pk, placement_id=f"{key}-{i}") for i, n in enumerate(members)],
        service_ports=list(ports),
    )


@pytest.fixture
def hub(db):
    return overlay_hub_register(public_key=HUB_KEY, endpoint="hub.example:51820")


def test_a_service_gets_a_segment_even_on_one_node_and_floods_to_the_hub(nodes, hub):  # noqa: F811
    single = _service("rental-1-1", nodes[:1], ports=(8080, 9000, 8080, 0))
    (message,) = single.values()
    assert message["remote_hosts"] == [HUB]  # no other host: only the hub, the endpoint's member
    segment = OverlaySegment.objects.get(key="rental-1-1")
    assert segment.service_ports == [8080, 9000]  # deduplicated, out-of-range dropped
    pair = _service("rental-2-2", nodes[:2])
    mine = pair["rental-2-2-0"]
    assert mine["remote_hosts"] == [overlay_node_address(nodes[1].pk), HUB]
    # Without exposed ports one placement still gets no segment, and a pair's does not flood to the hub.
    assert overlay_segment_allocate(key="rental-3-3", members=[SegmentMember(nodes[2].pk, "p")]) is None
    plain = overlay_segment_allocate(
        key="rental-4-4", members=[SegmentMember(nodes[1].pk, "q1"), SegmentMember(nodes[2].pk, "q2")]
    )
    assert HUB not in plain["q1"]["remote_hosts"]


def test_a_single_placement_with_internet_egress_keeps_its_network_and_the_tunnel():
    class Rental:
        expose = [{"name": "web", "port": 8080}]
        internet_egress = True

    assert _overlay_service_ports(Rental(), ["one"]) == []
    assert _overlay_service_ports(Rental(), ["one", "two"]) == [8080]  # a segment either way: the endpoint uses it
    Rental.internet_egress = False
    assert _overlay_service_ports(Rental(), ["one"]) == [8080]


def test_the_hub_joins_exactly_the_live_service_segments(nodes, hub):  # noqa: F811
    _service("rental-1-1", nodes[:2], ports=(8080, 9000))
    overlay_segment_allocate(
        key="rental-2-2", members=[SegmentMember(nodes[1].pk, "plain-0"), SegmentMember(nodes[2].pk, "plain-1")]
    )
    a, b = (overlay_node_address(n.pk) for n in nodes[:2])
    vni = OverlaySegment.objects.get(key="rental-1-1").vni
    (service,) = overlay_hub_state().services  # the plain segment is not one
    network = ipaddress.IPv4Network(f"{service.address}/{service.prefix_length}", strict=False)
    assert service.vni == vni and service.address == overlay_hub_segment_address(vni) == str(network[1])
    assert service.ports == (8080, 9000)
    assert service.members == ((str(network[10]), a), (str(network[11]), b))
    assert overlay_service_addresses(placement_ids=["rental-1-1-0", "rental-1-1-1", "plain-0"]) == (
        service.address,
        {"rental-1-1-0": str(network[10]), "rental-1-1-1": str(network[11])},
    )
    assert overlay_service_addresses(placement_ids=["plain-0", "plain-1"]) == ("", {})

    # An ended placement leaves it; a quarantined node's members go; a released segment goes altogether.
    NodePlacement.objects.create(node=nodes[0], placement_id="rental-1-1-0", state="exited")
    assert overlay_hub_state().services[0].members == ((str(network[11]), b),)
    node_quarantine(node_id=nodes[1].pk, reason="test")
    assert overlay_hub_state().services == ()
    overlay_segments_release(key_prefix="rental-1-")
    assert overlay_service_addresses(placement_ids=["rental-1-1-1"]) == ("", {})


def _segment(vni=5, members=(("10.128.5.10", "100.64.0.2"), ("10.128.5.11", "100.64.0.3")), ports=(8080,)):
    return ServiceSegment(vni=vni, address=f"10.128.{vni}.1", prefix_length=24, mtu=1370, ports=ports,
                          members=members)  # fmt: skip


def _rules(*services) -> list[str]:
    ruleset = render_ruleset(interface="jhub0", flows=[], services=services, hub_address=HUB)
    return [line.strip() for line in ruleset.splitlines()]


def test_each_host_may_send_the_hub_only_its_own_members_addresses_on_its_own_vni():
    rules = _rules(_segment(), _segment(vni=6, members=(("10.128.6.10", "100.64.0.3"),), ports=(9000,)))
    outer = 'iifname "jhub0" ip saddr {} ip daddr 100.64.0.1 udp dport 4789 @th,96,24 {}'
    # 10.128.5.10 = 0x0a80050a: inner IPv4 source (bits 336..367) or ARP sender (bits 352..383).
    assert f"{outer.format('100.64.0.2', 5)} @th,224,16 0x0800 @th,336,32 {{ 0x0a80050a }} accept" in rules
    assert f"{outer.format('100.64.0.2', 5)} @th,224,16 0x0806 @th,352,32 {{ 0x0a80050a }} accept" in rules
    assert f"{outer.format('100.64.0.3', 5)} @th,224,16 0x0800 @th,336,32 {{ 0x0a80050b }} accept" in rules
    assert f"{outer.format('100.64.0.3', 6)} @th,224,16 0x0800 @th,336,32 {{ 0x0a80060a }} accept" in rules
    to_hub = [r for r in rules if "ip daddr 100.64.0.1 udp dport 4789" in r]
    assert len(to_hub) == 6  # (host, VNI) pairs x (IPv4, ARP): host .2 has nothing on VNI 6, and no other VNI
    # The claim attacks: .2 sending .11 (its peer's), .1 (the hub's) or VNI 6's address is matched by no rule.
    for claim in ("0x0a80050b", "0x0a800501", "0x0a80060a"):
        assert not [r for r in to_hub if "ip saddr 100.64.0.2 " in r and claim in r]
    # What no rule took is dropped; a refused ARP claim is counted (the e2e test reads the counter).
    claims = 'iifname "jhub0" udp dport 4789 @th,224,16 0x0806 counter name "claims_refused" drop'
    assert rules.index(claims) > max(rules.index(r) for r in to_hub)
    assert rules.index('iifname "jhub0" drop') > rules.index(claims)
    # Nothing from a service link opens a connection; the hub opens only the exposed ports, per segment.
    inputs = rules[rules.index("chain input {") : rules.index("chain output {")]
    assert 'iifname "jhub0s5" ct state established,related accept' in inputs
    replies = inputs.index('iifname "jhub0s6" ct state established,related accept')
    assert inputs.index('iifname "jhub0s*" drop') > replies
    assert 'oifname "jhub0s5" ip daddr { 10.128.5.10, 10.128.5.11 } tcp dport { 8080 } accept' in rules
    assert 'oifname "jhub0s6" ip daddr { 10.128.6.10 } tcp dport { 9000 } accept' in rules
    assert rules[rules.index("chain output {") + 4 :][:2] == [
        'oifname "jhub0s*" ct state established,related accept',
        'oifname "jhub0s*" drop',
    ]
    # Routed through the hub: never from or to a service link.
    assert 'iifname "jhub0s*" drop' in rules and 'oifname "jhub0s*" drop' in rules
    forward = rules[rules.index("chain forward {") : rules.index("chain from_overlay {")]
    assert 'iifname "jhub0s*" drop' in forward and 'oifname "jhub0s*" drop' in forward


@pytest.mark.parametrize(
    "bad",
    [
        _segment(vni=2**24),
        _segment(vni=0),
        _segment(members=(("10.128.5.10; accept", "100.64.0.2"),)),
        _segment(members=(("10.128.5.10", "100.64.0.2 accept"),)),
        _segment(ports=("8080 } accept #",)),
    ],
)
def test_the_service_rules_refuse_injection(bad):
    with pytest.raises(ValueError):
        render_ruleset(interface="jhub0", flows=[], services=[bad], hub_address=HUB)


def test_the_hub_and_the_agent_derive_the_same_member_mac_and_the_link_name_fits():
    for address in ("10.128.5.10", "10.255.255.254", "10.128.0.1"):
        assert segment_mac(address) == agent_segment_mac(address)
    assert segment_mac("10.128.5.10") == "02:6a:0a:80:05:0a"
    assert len(service_link("a-long-iface15x", 2**24 - 1)) <= 15


def test_a_non_numeric_service_port_writes_no_segment(nodes, hub):  # noqa: F811
    with pytest.raises((ValueError, ValidationFailed)):
        _service("rental-5-5", nodes[:1], ports=("http",))
    assert not OverlaySegment.objects.filter(key="rental-5-5").exists()
