"""Where a multi-node rental's hosts should be: the buyer's region, then the lowest round trip over the overlay.

A hook the marketplace fills (`region_source_set`): regions live on the users' profiles, above this layer.
Without a source no region is known and only the round trips count. `placement_affinity` is computed
before the round's allocation and only reorders equally good plans: it never makes a plan fail.
"""

from collections.abc import Callable, Mapping

from nodes.models import Node, NodeOverlay

UNKNOWN_RTT_US = 10_000_000

_region_source: Callable[[list[int]], dict[int, str]] | None = None


def region_source_set(source: Callable[[list[int]], dict[int, str]] | None) -> None:
    global _region_source
    _region_source = source


def placement_affinity(
    *, bid_owners: Mapping[str, int], nodes: Mapping[str, Node]
) -> dict[str, dict[str, tuple[int, int]]]:
    """Return, per bid id and ask id, (0 when the node's provider is in the buyer's region else 1, RTT in µs)."""
    owners = sorted({*bid_owners.values(), *(node.owner_id for node in nodes.values())})
    regions = _region_source(owners) if _region_source is not None and owners else {}
    rtts = dict(
        NodeOverlay.objects.filter(node_id__in=[node.pk for node in nodes.values()], rtt_us__gt=0).values_list(
            "node_id", "rtt_us"
        )
    )
    affinity = {}
    for bid_id, owner in bid_owners.items():
        buyer_region = regions.get(owner)
        affinity[bid_id] = {
            ask_id: (
                0 if buyer_region is not None and regions.get(node.owner_id) == buyer_region else 1,
                rtts.get(node.pk, UNKNOWN_RTT_US),
            )
            for ask_id, node in nodes.items()
        }
    return affinity
