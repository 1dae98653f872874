"""The overlay's control plane (docs/overlay.md): keys and addresses, VNIs, what the hub may forward."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from nodes.models import NodeCommand, NodeOverlay, NodePlacement, OverlaySegment
from nodes.overlay_hub import render_ruleset
from nodes.services import (
    SegmentMember,
    node_quarantine,
    overlay_endpoints_record,
    overlay_hub_register,
    overlay_hub_state,
    overlay_segment_allocate,
    overlay_segments_release,
    overlay_segments_release_ended,
)
from nodes.services.overlay import overlay_node_address, overlay_on_hello
from tests.factories import UserFactory, online_node

KEYS = [
    "vGvtX+qXeV/CEHbyM3ewmHSjmPuSEiX3ROCVNhybYSY=",
    "pJXmdje+3l492lAm7beKd62YS9mO3YKPDmr/y1LlJT8=",
    "qulNibFqps/15Za3/ZPU7eyTgVQnSIwMtxZWXxKm73c=",
    "8KZ0c6nYj0Lw2dQwW8iTz7bqW0nL2rU1Q2Yk1l0x8Gc=",
]
HUB_KEY = "mB4vR1kKX0e2y7cJtqf3Xo6bGzYw2a8Qp9sN5dL1hEU="


@pytest.fixture
def nodes(db):
    owner = UserFactory()
    made = [online_node(owner, name=f"rig-{i}") for i in range(3)]
    for node, key in zip(made, KEYS, strict=False):
        overlay_on_hello(node=node, public_key=key)
    return made


def _configs(node) -> list[dict]:
    return [c.message["overlay_config"] for c in NodeCommand.objects.filter(node=node) if "overlay_config" in c.message]


def test_a_hello_key_gets_the_node_its_own_address_and_the_hub_config(db):
    node = online_node(UserFactory())
    overlay_on_hello(node=node, public_key=KEYS[0])
    assert _configs(node) == []  # no hub registered yet: nothing to dial
    overlay_hub_register(public_key=HUB_KEY, endpoint="hub.example:51820")
    config = _configs(node)[-1]
    assert config["address"] == overlay_node_address(node.pk) == NodeOverlay.objects.get(node=node).address
    assert config["hub_public_key"] == HUB_KEY and config["hub_endpoint"] == "hub.example:51820"
    assert config["network"] == "100.64.0.0/16" and config["hub_address"] == "100.64.0.1"


def test_a_stolen_or_malformed_key_gets_no_overlay_and_leaves_the_owner_alone(nodes):
    intruder = online_node(UserFactory(), name="intruder")
    overlay_on_hello(node=intruder, public_key=KEYS[0])  # node 0's key
    overlay_on_hello(node=intruder, public_key="AAAA; wg set")
    assert not NodeOverlay.objects.filter(node=intruder).exists()
    assert NodeOverlay.objects.get(public_key=KEYS[0]).node == nodes[0]


@pytest.mark.parametrize("key, endpoint", [("short", "hub:1"), (HUB_KEY, "hub"), (HUB_KEY, "hub:0"), (HUB_KEY, ":1")])
def test_the_hub_registration_refuses_bad_input(db, key, endpoint):
    from janction.errors import ValidationFailed

    with pytest.raises(ValidationFailed):
        overlay_hub_register(public_key=key, endpoint=endpoint)


def _allocate(key, members):
    return overlay_segment_allocate(
        key=key, members=[SegmentMember(node_id=n.pk, placement_id=f"{key}-{n.pk}") for n in members]
    )


def test_segments_get_distinct_vnis_names_and_flood_lists(nodes):
    assert _allocate("rental-1-1", nodes[:2]) is None  # no hub: the rental runs without a segment
    overlay_hub_register(public_key=HUB_KEY, endpoint="hub.example:51820")
    assert _allocate("rental-1-1", nodes[:1]) is None  # one host needs no segment
    first = _allocate("rental-1-1", nodes[:2])
    assert _allocate("rental-1-1", nodes[:2]) == first  # idempotent by key
    second = _allocate("rental-2-2", nodes[1:3])
    vnis = {m["vni"] for m in first.values()}, {m["vni"] for m in second.values()}
    assert len(vnis[0]) == len(vnis[1]) == 1 and vnis[0] != vnis[1]
    mine = first[f"rental-1-1-{nodes[0].pk}"]
    assert mine["remote_hosts"] == [overlay_node_address(nodes[1].pk)]
    assert [n["name"] for n in mine["names"]] == ["worker-0", "worker-1"]
    assert mine["address"] == mine["names"][0]["address"] and mine["address"].startswith("10.128.")
    # A released VNI is free again; a live one never is.
    overlay_segments_release(key_prefix="rental-1-")
    third = _allocate("rental-3-3", nodes[:2])
    assert {m["vni"] for m in third.values()} == vnis[0]


def test_segments_name_the_other_hosts_as_direct_peers_at_the_endpoint_the_hub_saw(nodes):
    overlay_hub_register(public_key=HUB_KEY, endpoint="hub.example:51820")
    seen = {KEYS[1]: "198.51.100.7:40001", KEYS[2]: "[2001:db8::1]:40002", KEYS[3]: "198.51.100.9:1"}
    assert overlay_endpoints_record(endpoints=seen) == 1  # IPv6 ignored; KEYS[3] is no node's
    assert overlay_endpoints_record(endpoints=seen) == 0
    first = _allocate("rental-1-1", nodes[:3])
    a, b, _ = (overlay_node_address(n.pk) for n in nodes)
    # node 0 hears of node 1 (endpoint known); node 2's endpoint is unknown: it stays relayed by the hub.
    assert first[f"rental-1-1-{nodes[0].pk}"]["peers"] == [
        {"public_key": KEYS[1], "endpoint": "198.51.100.7:40001", "address": b}
    ]
    assert first[f"rental-1-1-{nodes[1].pk}"]["peers"] == []
    assert NodeOverlay.objects.get(node=nodes[0]).endpoint == ""
    assert a in first[f"rental-1-1-{nodes[2].pk}"]["remote_hosts"]


def test_a_node_off_the_overlay_gets_no_segment(nodes):
    overlay_hub_register(public_key=HUB_KEY, endpoint="hub.example:51820")
    plain = online_node(UserFactory(), name="plain")
    assert _allocate("rental-9-9", [nodes[0], plain]) is None


def test_the_hub_forwards_only_live_segments_between_their_own_hosts(nodes):
    overlay_hub_register(public_key=HUB_KEY, endpoint="hub.example:51820")
    _allocate("rental-1-1", nodes[:2])
    _allocate("rental-2-2", nodes[1:3])
    a, b, c = (overlay_node_address(n.pk) for n in nodes)
    state = overlay_hub_state()
    assert {peer[1] for peer in state.peers} == {a, b, c}
    vni_1 = OverlaySegment.objects.get(key="rental-1-1").vni
    vni_2 = OverlaySegment.objects.get(key="rental-2-2").vni
    assert set(state.flows) == {(a, b, vni_1), (b, a, vni_1), (b, c, vni_2), (c, b, vni_2)}
    # a and c share no segment: nothing between them, in either direction, on any VNI.
    assert not [f for f in state.flows if {f[0], f[1]} == {a, c}]

    # A placement that ended stops its host's flows; a quarantined node leaves the overlay at once.
    NodePlacement.objects.create(node=nodes[0], placement_id=f"rental-1-1-{nodes[0].pk}", state="exited")
    assert {f[2] for f in overlay_hub_state().flows} == {vni_2}
    node_quarantine(node_id=nodes[2].pk, reason="test")
    state = overlay_hub_state()
    assert c not in {peer[1] for peer in state.peers} and state.flows == ()
    NodePlacement.objects.create(node=nodes[1], placement_id=f"rental-1-1-{nodes[1].pk}", state="exited")
    assert overlay_segments_release_ended() == 1
    assert OverlaySegment.objects.get(key="rental-1-1").released_at is not None


def test_the_ruleset_allows_exactly_the_flows_and_refuses_injection():
    ruleset = render_ruleset(interface="jhub0", flows=[("100.64.0.2", "100.64.0.3", 7)])
    assert "ip saddr 100.64.0.2 ip daddr 100.64.0.3 udp dport 4789 @th,96,24 7 accept" in ruleset
    accepting = [line.strip() for line in ruleset.splitlines() if line.strip().endswith(" accept")]
    # The flow, the rate-limited echo requests to the hub, and replies on the hub's own service connections.
    assert len(accepting) == 3 and 'oifname "jhub0s*" ct state established,related accept' in accepting
    assert 'oifname != "jhub0" drop' in ruleset and "counter drop" in ruleset
    for bad in [("100.64.0.2 accept; ip saddr 0.0.0.0/0", "100.64.0.3", 7), ("100.64.0.2", "100.64.0.3", 2**24)]:
        with pytest.raises(ValueError):
            render_ruleset(interface="jhub0", flows=[bad])


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("requires_postgresql")
def test_concurrent_allocations_never_share_a_live_vni():
    owner = UserFactory()
    made = [online_node(owner, name=f"rig-{i}") for i in range(2)]
    for node, key in zip(made, KEYS, strict=False):
        overlay_on_hello(node=node, public_key=key)
    overlay_hub_register(public_key=HUB_KEY, endpoint="hub.example:51820")
    barrier = threading.Barrier(6)
    errors = []

    def allocate(index: int) -> None:
        try:
            barrier.wait()
            _allocate(f"rental-{index}-{index}", made)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=allocate, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    vnis = list(OverlaySegment.objects.values_list("vni", flat=True))
    assert len(vnis) == 6 and len(set(vnis)) == 6
