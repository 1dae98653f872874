"""Placement planner (pure): which nodes' sold units serve which winning bid.

Fewest nodes first, then best fit: a bid that one node can serve goes to the node whose remaining
sold units fit it most tightly; otherwise it takes the nodes with the most remaining units until it
is covered. A node never gives more units than it sold in the round.
"""

from collections.abc import Mapping, Sequence


class PlacementError(ValueError):
    """The winners need more units than the nodes sold (the engine's allocation was not used as given)."""


def plan_placements(
    winners: Sequence[tuple[str, int]], sold: Mapping[str, int], *, preference: Mapping[str, int] | None = None
) -> dict[str, list[tuple[str, int]]]:
    """Return, per bid id, the (node id, units) it takes; `preference` breaks ties (lower is preferred)."""
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
        needed = units
        parts = []
        for node in sorted(remaining, key=lambda n: (-remaining[n], rank.get(n, 0), n)):
            if needed == 0:
                break
            take = min(remaining[node], needed)
            if take:
                parts.append((node, take))
                remaining[node] -= take
                needed -= take
        if needed:
            raise PlacementError(f"bid {bid_id} needs {needed} more units than the nodes sold")
        plan[bid_id] = parts
    return plan
