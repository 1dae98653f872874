"""The overlay's control plane (docs/overlay.md): node addresses, the hub's registration, segments and VNIs.

Everything the hub enforces is derived here from the database (`overlay_hub_state`), so a restarted hub
rebuilds the same WireGuard peers and nftables rules. A node's public key is its agent's claim; it only
ever gets the node an address of its own and the flows of segments its placements are on.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from janction.errors import ValidationFailed
from nodes.models import (
    PLACEMENT_FINAL_STATES,
    Node,
    NodeCommand,
    NodeOverlay,
    NodePlacement,
    NodeState,
    OverlayHub,
    OverlaySegment,
    OverlaySegmentMember,
)

log = logging.getLogger("nodes.overlay")

WG_KEY = re.compile(r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")
VXLAN_OVERHEAD = 50
FIRST_MEMBER_HOST = 10
# The hub's own address on a service segment: host .1 of the VNI's /24 (members start at .10).
HUB_MEMBER_HOST = 1
MAX_MEMBERS = 64
ALLOCATE_ATTEMPTS = 8
MAX_RTT_US = 10_000_000


def overlay_network() -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(settings.OVERLAY_NETWORK)


def overlay_hub_address() -> str:
    """Return the hub's overlay address: the network's first host address."""
    return str(overlay_network()[1])


def overlay_node_address(node_id: int) -> str:
    """Return a node's overlay address: fixed by its primary key, so no two nodes ever share one."""
    network = overlay_network()
    if node_id + 1 >= network.num_addresses - 1:
        raise ValidationFailed(
            f"Node {node_id} does not fit the overlay network {network}; widen OVERLAY_NETWORK.", code="overlay_full"
        )
    return str(network[node_id + 1])


def segment_network(vni: int) -> ipaddress.IPv4Network:
    """Return the /24 of a VNI inside OVERLAY_SEGMENT_NETWORK."""
    base = ipaddress.IPv4Network(settings.OVERLAY_SEGMENT_NETWORK)
    return ipaddress.IPv4Network((int(base.network_address) + vni * 256, 24))


def overlay_hub_segment_address(vni: int) -> str:
    """Return the hub's member address on a service segment (the source the containers see the endpoint come from)."""
    return str(segment_network(vni)[HUB_MEMBER_HOST])


def max_vni() -> int:
    return min(ipaddress.IPv4Network(settings.OVERLAY_SEGMENT_NETWORK).num_addresses // 256 - 1, 2**24 - 1)


# -- the hub -----------------------------------------------------------------------------------------------------


def overlay_hub_register(*, public_key: str, endpoint: str) -> OverlayHub:
    """Record the hub's public key and endpoint (the `overlay_hub` process calls this at start)."""
    if not WG_KEY.match(public_key):
        raise ValidationFailed("The hub's public key is not a WireGuard key.", code="overlay_key_invalid")
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValidationFailed(f"The hub endpoint must be HOST:PORT, got {endpoint!r}.", code="overlay_endpoint")
    with transaction.atomic():
        hub = OverlayHub.objects.select_for_update().order_by("pk").first() or OverlayHub()
        hub.public_key, hub.endpoint, hub.address = public_key, endpoint, overlay_hub_address()
        hub.save()
        OverlayHub.objects.exclude(pk=hub.pk).delete()
        # Every connected overlay node hears the (new) hub at once.
        for overlay in NodeOverlay.objects.filter(node__state__in=[NodeState.ONLINE, NodeState.DRAINING]):
            NodeCommand.objects.create(node_id=overlay.node_id, message=_config_message(hub, overlay))
    return hub


def _config_message(hub: OverlayHub, overlay: NodeOverlay) -> dict:
    network = overlay_network()
    return {
        "overlay_config": {
            "address": overlay.address,
            "prefix_length": network.prefixlen,
            "hub_public_key": hub.public_key,
            "hub_endpoint": hub.endpoint,
            "hub_address": hub.address,
            "network": str(network),
            "keepalive_seconds": settings.OVERLAY_KEEPALIVE_SECONDS,
            "mtu": settings.OVERLAY_MTU,
        }
    }


def overlay_on_hello(*, node: Node, public_key: str) -> None:
    """Take a node's WireGuard public key from its Hello and queue its OverlayConfig (inside the Hello's transaction).

    A malformed key, or one another node already uses, gets the node no overlay (logged), never an error
    for the rest of the Hello.
    """
    if not public_key:
        return
    if not WG_KEY.match(public_key):
        log.warning("node %s: Hello carries a malformed WireGuard key; no overlay", node.pk)
        return
    try:
        with transaction.atomic():
            overlay, _ = NodeOverlay.objects.update_or_create(
                node=node, defaults={"public_key": public_key, "address": overlay_node_address(node.pk)}
            )
    except IntegrityError:
        log.warning("node %s: its WireGuard key belongs to another node; no overlay", node.pk)
        return
    hub = OverlayHub.objects.order_by("pk").first()
    if hub is not None:
        NodeCommand.objects.create(node=node, message=_config_message(hub, overlay))


def overlay_endpoints_record(*, endpoints: dict[str, str]) -> int:
    """Store where the hub sees each node's WireGuard packets come from (public key -> "IPv4:port"); return changes.

    The hub reads it from its own interface (`wg show ... endpoints`): an address the node's NAT maps for the
    hub, which other hosts of its segments dial for a direct path. Anything but IPv4:port is ignored.
    """
    changed = 0
    for overlay in NodeOverlay.objects.filter(public_key__in=list(endpoints)):
        endpoint = _ipv4_endpoint(endpoints[overlay.public_key])
        if endpoint and endpoint != overlay.endpoint:
            NodeOverlay.objects.filter(pk=overlay.pk).update(endpoint=endpoint)
            changed += 1
    return changed


def _ipv4_endpoint(value: str) -> str:
    host, _, port = value.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return ""
    return f"{host}:{port}" if port.isdigit() and 0 < int(port) < 65536 else ""


def overlay_rtt_record(*, samples: dict[int, int]) -> None:
    """Store the agents' measured round trips to the hub (node id -> microseconds, clamped)."""
    for node_id, rtt_us in samples.items():
        if rtt_us > 0:
            NodeOverlay.objects.filter(node_id=node_id).update(rtt_us=min(rtt_us, MAX_RTT_US))


# -- segments ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentMember:
    node_id: int
    placement_id: str
    role: str = "worker"


def overlay_segment_allocate(
    *, key: str, members: list[SegmentMember], service_ports: list[int] | tuple[int, ...] = ()
) -> dict[str, dict] | None:
    """Give a placement set its segment; return each placement's `segment` message, or None.

    A segment is made for two or more placements, or for one when the rental exposes service ports (the
    service endpoint then reaches it over the overlay, the hub being a member: docs/overlay.md). None when
    no hub is registered or a member's node is not on the overlay: the rental then runs as before (peers by
    host name, the endpoint through the agent's tunnel). Idempotent by key.
    """
    service_ports = sorted({int(port) for port in service_ports if 0 < int(port) < 65536})
    fewest = 1 if service_ports else 2
    if len(members) < fewest or len(members) > MAX_MEMBERS or OverlayHub.objects.first() is None:
        return None
    overlays = {o.node_id: o for o in NodeOverlay.objects.filter(node_id__in=[m.node_id for m in members])}
    if len(overlays) < len({m.node_id for m in members}):
        return None
    with transaction.atomic():
        segment = OverlaySegment.objects.filter(key=key).first()
        if segment is None:
            overlay_segments_release_ended()
            segment = _segment_create(key, service_ports)
            network = segment_network(segment.vni)
            OverlaySegmentMember.objects.bulk_create(
                OverlaySegmentMember(
                    segment=segment,
                    node_id=member.node_id,
                    placement_id=member.placement_id,
                    index=index,
                    name=f"{member.role}-{index}",
                    address=str(network[FIRST_MEMBER_HOST + index]),
                )
                for index, member in enumerate(members)
            )
        return _segment_messages(segment, overlays)


def _segment_create(key: str, service_ports: list[int]) -> OverlaySegment:
    """Create the segment with the lowest VNI no live segment holds (the partial unique index arbitrates races)."""
    for _ in range(ALLOCATE_ATTEMPTS):
        live = set(OverlaySegment.objects.filter(released_at__isnull=True).values_list("vni", flat=True))
        vni = next((v for v in range(1, max_vni() + 1) if v not in live), None)
        if vni is None:
            raise ValidationFailed("Every overlay segment is in use; try again later.", code="overlay_segments_full")
        try:
            with transaction.atomic():
                return OverlaySegment.objects.create(key=key, vni=vni, service_ports=service_ports)
        except IntegrityError:
            continue
    raise ValidationFailed("Could not allocate an overlay segment; try again.", code="overlay_segment_busy")


def _segment_messages(segment: OverlaySegment, overlays: dict[int, NodeOverlay]) -> dict[str, dict]:
    members = list(segment.members.order_by("index"))
    network = segment_network(segment.vni)
    names = [{"name": m.name, "address": m.address} for m in members]
    hosts = list(dict.fromkeys(m.node_id for m in members))
    # A service segment floods to the hub too: it is the member through which the endpoint reaches the containers.
    hub = [overlay_hub_address()] if segment.service_ports else []
    return {
        member.placement_id: {
            "vni": segment.vni,
            "address": member.address,
            "prefix_length": network.prefixlen,
            "mtu": settings.OVERLAY_MTU - VXLAN_OVERHEAD,
            "remote_hosts": [overlays[node_id].address for node_id in hosts if node_id != member.node_id] + hub,
            "names": names,
            # Direct paths: every other host whose endpoint the hub has seen. The agent adds only these keys.
            "peers": [
                {
                    "public_key": overlays[node_id].public_key,
                    "endpoint": overlays[node_id].endpoint,
                    "address": overlays[node_id].address,
                }
                for node_id in hosts
                if node_id != member.node_id and overlays[node_id].endpoint
            ],
        }
        for member in members
    }


def overlay_segments_release(*, key_prefix: str) -> int:
    """Release the live segments whose key starts with key_prefix (their rental ended); return how many."""
    return OverlaySegment.objects.filter(key__startswith=key_prefix, released_at__isnull=True).update(
        released_at=timezone.now()
    )


def overlay_segments_release_ended() -> int:
    """Release live segments all of whose placements have ended; return how many."""
    ended = []
    for segment in OverlaySegment.objects.filter(released_at__isnull=True).prefetch_related("members"):
        placement_ids = [m.placement_id for m in segment.members.all()]
        states = dict(NodePlacement.objects.filter(placement_id__in=placement_ids).values_list("placement_id", "state"))
        if placement_ids and all(states.get(pid) in PLACEMENT_FINAL_STATES for pid in placement_ids):
            ended.append(segment.pk)
    return OverlaySegment.objects.filter(pk__in=ended).update(released_at=timezone.now())


# -- what the hub enforces -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceSegment:
    """A segment the hub joins as a member so the service endpoint reaches its containers' exposed ports.

    `members` are (segment address, host overlay address) of its live placements: the hub pins each address
    to its host (no learning), accepts from a host only its own members' addresses, and opens connections
    only to the members on `ports`.
    """

    vni: int
    address: str
    prefix_length: int
    mtu: int
    ports: tuple[int, ...]
    members: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class HubState:
    """The hub's desired state: WireGuard peers (key, address), allowed VxLAN flows (src, dst, VNI), services."""

    peers: tuple[tuple[str, str], ...]
    flows: tuple[tuple[str, str, int], ...]
    services: tuple[ServiceSegment, ...] = ()


def overlay_hub_state() -> HubState:
    """Return what the hub must allow now, from the database only."""
    # A quarantined or deleted node leaves the overlay: the hub drops its peer and every flow of it.
    overlays = NodeOverlay.objects.filter(node__deleted_at__isnull=True).exclude(node__state=NodeState.QUARANTINED)
    peers = {o.node_id: (o.public_key, o.address) for o in overlays}
    members = list(
        OverlaySegmentMember.objects.filter(segment__released_at__isnull=True)
        .select_related("segment")
        .order_by("segment__vni", "index")
    )
    ended = set(
        NodePlacement.objects.filter(
            placement_id__in=[m.placement_id for m in members], state__in=PLACEMENT_FINAL_STATES
        ).values_list("placement_id", flat=True)
    )
    live: dict[int, list[OverlaySegmentMember]] = {}
    for member in members:
        if member.placement_id not in ended and member.node_id in peers:
            live.setdefault(member.segment.vni, []).append(member)
    flows = sorted(
        (peers[a.node_id][1], peers[b.node_id][1], vni)
        for vni, group in live.items()
        for a in group
        for b in group
        if a.node_id != b.node_id
    )
    network_mtu = settings.OVERLAY_MTU - VXLAN_OVERHEAD
    services = tuple(
        ServiceSegment(
            vni=vni,
            address=overlay_hub_segment_address(vni),
            prefix_length=segment_network(vni).prefixlen,
            mtu=network_mtu,
            ports=tuple(sorted({int(p) for p in group[0].segment.service_ports})),
            members=tuple((m.address, peers[m.node_id][1]) for m in group),
        )
        for vni, group in sorted(live.items())
        if group[0].segment.service_ports
    )
    return HubState(peers=tuple(sorted(peers.values())), flows=tuple(flows), services=services)


def overlay_service_addresses(*, placement_ids: tuple[str, ...] | list[str]) -> tuple[str, dict[str, str]]:
    """Return (the hub's address, {placement id: segment address}) of the placements on a live service segment.

    The ingress dials these over the overlay from the hub's address; ("", {}) when none is on one.
    """
    rows = list(
        OverlaySegmentMember.objects.filter(
            placement_id__in=list(placement_ids), segment__released_at__isnull=True
        ).values_list("placement_id", "address", "segment__vni", "segment__service_ports")
    )
    rows = [row for row in rows if row[3]]
    if not rows:
        return "", {}
    vni = rows[0][2]  # one rental, one segment
    return overlay_hub_segment_address(vni), {pid: address for pid, address, v, _ in rows if v == vni}


def overlay_segment_of(*, placement_id: str) -> OverlaySegmentMember | None:
    """Return the live segment membership of a placement, if any."""
    return (
        OverlaySegmentMember.objects.filter(placement_id=placement_id, segment__released_at__isnull=True)
        .select_related("segment")
        .first()
    )


__all__ = [
    "HubState",
    "SegmentMember",
    "ServiceSegment",
    "overlay_endpoints_record",
    "overlay_hub_register",
    "overlay_hub_state",
    "overlay_on_hello",
    "overlay_rtt_record",
    "overlay_segment_allocate",
    "overlay_segment_of",
    "overlay_segments_release",
    "overlay_segments_release_ended",
    "overlay_service_addresses",
]
