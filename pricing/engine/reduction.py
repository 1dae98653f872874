"""Budget-safe clearing: one uniform price that no trading participant's report sets, reached by trade reduction.

Start from the efficient allocation (``clearing.clear_units``); then repeat:

1. the price ``p`` is the cost of the cheapest ask that sells nothing or, when every ask sells, the pool's
   public reference price (either may be absent);
2. winning bids worth less than ``p`` per unit drop out (they would not pay it);
3. if the dearest unit still sold costs more than ``p`` (or there is no price at all), the newest winning
   bid drops out (queue order, not value, so no buyer can push another out by bidding higher);

and stop when every winner is worth at least ``p`` and every sold unit costs at most ``p``. The remaining
winners take the cheapest units. Everyone who trades pays or receives ``p`` per vGPU-hour, so buyers pay
exactly what providers receive (budget 0) and nobody trades at a loss, exactly, in integer millionths.
A bid that drops out pays nothing and sets no price. docs/pricing.md has the argument and measurements.
"""

import bisect
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from pricing.engine.clearing import Clearing, clear_units


@dataclass(frozen=True)
class Reduced:
    """The outcome of a budget-safe round, in millionths per hour; ``price`` is per vGPU-hour."""

    surplus: int
    won: tuple[bool, ...]
    bid_payments: tuple[int, ...]
    units_sold: tuple[int, ...]
    ask_payments: tuple[int, ...]
    vcg: Clearing
    price: int | None
    dropped: tuple[int, ...]  # bids the efficient allocation took and the reduction dropped, in drop order


class _MeritOrder:
    """Asks sorted by cost then input position, answering "dearest sold" and "cheapest unsold" for a quantity."""

    def __init__(self, units: Sequence[int], costs: Sequence[int]) -> None:
        self.order = sorted(range(len(units)), key=lambda i: (costs[i], i))
        self.costs = [costs[i] for i in self.order]
        self.starts = []
        running = 0
        for i in self.order:
            self.starts.append(running)
            running += units[i]
        self.ends = [start + units[i] for start, i in zip(self.starts, self.order, strict=True)]

    def dearest_sold(self, quantity: int) -> int | None:
        """Return the cost of the last unit sold when the cheapest ``quantity`` units trade."""
        if quantity <= 0:
            return None
        return self.costs[bisect.bisect_left(self.ends, quantity)]

    def cheapest_unsold(self, quantity: int) -> int | None:
        """Return the cost of the cheapest ask that sells nothing when the cheapest ``quantity`` units trade."""
        k = bisect.bisect_left(self.starts, quantity)
        return self.costs[k] if k < len(self.costs) else None

    def sold(self, n_asks: int, quantity: int) -> list[int]:
        """Return the units each ask (by input position) sells for ``quantity`` units."""
        sold = [0] * n_asks
        for i, start, end in zip(self.order, self.starts, self.ends, strict=True):
            if start >= quantity:
                break
            sold[i] = min(end, quantity) - start
        return sold


def clear_reduced(
    ask_units: Sequence[int],
    ask_costs: Sequence[int],
    bid_units: Sequence[int],
    bid_values: Sequence[int],
    reference: int | None,
) -> Reduced:
    """Allocate and price one round at a single price with budget balance and individual rationality, exactly."""
    vcg = clear_units(ask_units, ask_costs, bid_units, bid_values, None)
    merit = _MeritOrder(ask_units, ask_costs)
    won = list(vcg.won)
    by_value = deque(sorted((j for j, w in enumerate(won) if w), key=lambda j: (bid_values[j], -j)))
    by_age = deque(sorted((j for j, w in enumerate(won) if w), reverse=True))
    quantity = sum(bid_units[j] for j in by_value)
    dropped: list[int] = []
    price = None

    def drop(j: int) -> None:
        nonlocal quantity
        won[j] = False
        quantity -= bid_units[j]
        dropped.append(j)

    while quantity > 0:
        unsold = merit.cheapest_unsold(quantity)
        price = unsold if unsold is not None else reference
        while by_value and not won[by_value[0]]:
            by_value.popleft()
        if price is not None and bid_values[by_value[0]] < price:
            drop(by_value.popleft())
            continue
        if price is not None and merit.dearest_sold(quantity) <= price:
            break
        while not won[by_age[0]]:
            by_age.popleft()
        drop(by_age.popleft())
    if quantity == 0:
        price = None
    sold = merit.sold(len(ask_units), quantity)
    bid_payments = tuple(price * bid_units[j] if w else 0 for j, w in enumerate(won))
    ask_payments = tuple(price * y if y else 0 for y in sold)
    surplus = sum(bid_values[j] * bid_units[j] for j, w in enumerate(won) if w) - sum(
        c * y for c, y in zip(ask_costs, sold, strict=True)
    )
    return Reduced(
        surplus=surplus,
        won=tuple(won),
        bid_payments=bid_payments,
        units_sold=tuple(sold),
        ask_payments=ask_payments,
        vcg=vcg,
        price=price,
        dropped=tuple(dropped),
    )
