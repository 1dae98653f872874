"""The agent checks every overlay field the platform sends before it reaches `ip` or `wg` (docs/overlay.md)."""

import pytest

from agent.overlay.direct import host_ruleset
from agent.overlay.net import interface_name, netns_name, wg_key
from agent.overlay.segments import PlacementNames, SegmentSpec
from agent.overlay.underlay import UnderlayConfig

KEY = "vGvtX+qXeV/CEHbyM3ewmHSjmPuSEiX3ROCVNhybYSY="
KEY2 = "pJXmdje+3l492lAm7beKd62YS9mO3YKPDmr/y1LlJT8="


def _config(**changes):
    values = dict(
        address="100.64.0.5",
        prefix_length=16,
        hub_public_key=KEY,
        hub_endpoint="hub.example:51820",
        hub_address="100.64.0.1",
        network="100.64.0.0/16",
    )
    return UnderlayConfig(**{**values, **changes})


def _segment(**changes):
    values = dict(
        vni=7, address="10.128.7.10", prefix_length=24, mtu=1370, remote_hosts=("100.64.0.6",),
        names=(("worker-0", "10.128.7.10"), ("worker-1", "10.128.7.11")),
    )  # fmt: skip
    return SegmentSpec(**{**values, **changes})


def test_a_sound_config_and_segment_pass():
    assert _config().validated() == _config()
    assert _segment().validated() == _segment()
    direct = _segment(peers=((KEY, "172.16.0.6:40000", "100.64.0.6"),))
    assert direct.validated() == SegmentSpec.from_json(direct.to_json())


def test_the_hosts_filter_accepts_only_the_hub_and_shared_vnis_from_their_hosts():
    ruleset = host_ruleset(prefix="jo", interface="jow", hub_address="100.64.0.1", flows=[("100.64.0.6", 7)])
    accepting = [line.strip() for line in ruleset.splitlines() if line.strip().endswith(" accept")]
    assert accepting == ["ip saddr 100.64.0.1 accept", "ip saddr 100.64.0.6 udp dport 4789 @th,96,24 7 accept"]
    assert 'iifname "jow" jump from_overlay' in ruleset and "counter drop" in ruleset
    assert 'iifname "jow" drop' in ruleset  # nothing from the overlay is forwarded to the host's LAN
    for bad in [("100.64.0.6 accept; ip saddr 0.0.0.0/0", 7), ("100.64.0.6", 2**24)]:
        with pytest.raises(ValueError):
            host_ruleset(prefix="jo", interface="jow", hub_address="100.64.0.1", flows=[bad])


@pytest.mark.parametrize(
    "changes",
    [
        {"address": "100.64.0.5; reboot"},
        {"hub_public_key": "not-a-key"},
        {"hub_public_key": KEY[:-2] + "x="},
        {"hub_endpoint": "hub.example"},
        {"hub_endpoint": "hub.example:70000"},
        {"hub_endpoint": "a b:1"},
        {"prefix_length": 0},
        {"mtu": 100},
        {"network": "100.64.0.0"},
        {"keepalive_seconds": 0},
    ],
)
def test_a_bad_underlay_config_is_refused(changes):
    with pytest.raises(ValueError):
        _config(**changes).validated()


@pytest.mark.parametrize(
    "changes",
    [
        {"vni": 0},
        {"vni": 2**24},
        {"address": "fe80::1"},
        {"remote_hosts": ("100.64.0.6 dev lo",)},
        {"remote_hosts": tuple(f"100.64.1.{i}" for i in range(65))},
        {"names": (("worker 0", "10.128.7.10"),)},
        {"names": (("Worker-0", "10.128.7.10"),)},
        {"names": (("evil", "127.0.0.1"),)},  # a name may only point into the segment
        {"names": (("x" * 64, "10.128.7.10"),)},
        {"mtu": 65536},
        {"peers": (("not-a-key", "172.16.0.6:40000", "100.64.0.6"),)},
        {"peers": ((KEY, "172.16.0.6", "100.64.0.6"),)},
        {"peers": ((KEY, "host.example:40000", "100.64.0.6"),)},
        {"peers": ((KEY, "172.16.0.6:40000 persistent-keepalive 1", "100.64.0.6"),)},
        # A peer may only stand for one of the segment's hosts (never the hub, never another address).
        {"peers": ((KEY, "172.16.0.6:40000", "100.64.0.1"),)},
        {"peers": ((KEY, "172.16.0.6:40000", "100.64.0.6"), (KEY2, "172.16.0.7:40000", "100.64.0.6"))},
    ],
)
def test_a_bad_segment_is_refused(changes):
    with pytest.raises(ValueError):
        _segment(**changes).validated()


def test_names_are_derived_safely_and_fit_linux_limits():
    names = PlacementNames.of("jo", "rental-1-2-3; rm -rf /")
    assert len(names.veth) <= 15 and names.veth.startswith("jov")
    assert names.netns.startswith("jon") and netns_name(names.netns) == names.netns
    with pytest.raises(ValueError):
        interface_name("a" * 16)
    with pytest.raises(ValueError):
        interface_name("eth0 type")
    with pytest.raises(ValueError):
        wg_key("AAAA")


def test_the_capability_check_says_what_is_missing(monkeypatch):
    from agent.overlay import capabilities

    monkeypatch.setattr(capabilities.shutil, "which", lambda name: None)
    caps = capabilities.check("zzprobe0k")
    message = caps.describe()
    assert not caps.ok
    assert "apt-get install wireguard-go" in message and "`wg` command (apt-get install wireguard-tools)" in message
    assert "`nft` command (apt-get install nftables)" in message
