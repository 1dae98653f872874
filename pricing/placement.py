"""Placement planner (pure): which nodes' sold units serve which winning bid.

Fewest nodes first, then best fit: a bid that one node can serve goes to the node whose remaining
sold units fit it most tightly; otherwise it takes as few nodes as can cover it, and among the ways to do
that prefers the nodes with the best `affinity` for the bid (the buyer's region, then the lowest round
trip over the overlay: pricing.locality), then the most remaining units. A node never gives more units
than it sold in the round, and the affinity only reorders: a plan that fits without it fits with it.
"""

from collections.abc import Mapping, Sequence


class PlacementError(ValueError):
    """The winners need more units than the nodes sold (the engine's allocation was not used as given)."""


def plan_placements(
    winners: Sequence[tuple[str, int]],
    sold: Mapping[str, int],
    *,
    preference: Mapping[str, int] | None = None,
    affinity: Mapping[str, Mapping[str, tuple]] | None = None,
) -> dict[str, list[tuple[str, int]]]:
    """Return, per bid id, the (node id, units) it takes; `preference` breaks ties (lower is preferred).

    `affinity[bid][node]` (lower is better) chooses among the multi-node plans with the fewest nodes.
    """
    remaining = {node: units for node, units in sold.items() if units > 0}
    rank = preference or {}
    plan: dict[str, list[tuple[str, int]]] = {}
    # Big bids first: they are the hardest to keep on one node.
    for bid_id, units in sorted(winners, key=lambda w: (-w[1], w[0])):
        fitting = [node for node, left in remaining.items() if left >= units]
        if fitting:
            node = min(fitting, key=lambda n: (remaining[n] - units, rank.get(n, 0), n))
            plan[bid_id] = [(node, units)]
            remaining[node] -= units
            continue
        plan[bid_id] = _split(bid_id, units, remaining, rank, (affinity or {}).get(bid_id, {}))
    return plan


def _split(
    bid_id: str, units: int, remaining: dict[str, int], rank: Mapping[str, int], affinity: Mapping[str, tuple]
) -> list[tuple[str, int]]:
    """Take `units` from the fewest nodes, preferring better affinity; update `remaining`."""
    largest = sorted((left for left in remaining.values() if left > 0), reverse=True)
    hosts, covered = 0, 0
    for left in largest:
        if covered >= units:
            break
        covered += left
        hosts += 1
    if covered < units:
        raise PlacementError(f"bid {bid_id} needs {units - covered} more units than the nodes sold")
    order = sorted(
        (n for n, left in remaining.items() if left > 0),
        key=lambda n: (affinity.get(n, ()), -remaining[n], rank.get(n, 0), n),
    )
    chosen: list[str] = []
    needed = units
    for index, node in enumerate(order):
        if needed <= 0 or len(chosen) == hosts:
            break
        slots = hosts - len(chosen) - 1
        others = sorted((remaining[n] for n in order[index + 1 :]), reverse=True)[:slots]
        # Take this node only if the plan can still be finished within the fewest number of nodes.
        if min(remaining[node], needed) + sum(others) >= needed:
            chosen.append(node)
            needed -= min(remaining[node], needed)
    parts = []
    needed = units
    # The chosen nodes give as much as they can, the fullest first (the last one gives the rest).
    for node in sorted(chosen, key=lambda n: (-remaining[n], n)):
        take = min(remaining[node], needed)
        if take:
            parts.append((node, take))
            remaining[node] -= take
            needed -= take
    assert needed == 0, "the feasibility check keeps every chosen set complete"
    return parts
