"""Budget-safe clearing: a uniform price no trader's own report sets, with one trade reduction as fallback.

Start from the efficient allocation (``clearing.clear_units``). The candidate price is
``p0 = min(reference, cost of the cheapest ask that sells nothing)``: a public per-pool
reference price, lowered to the first excluded ask. If every sold unit costs at most ``p0``
and every winning bid is worth at least ``p0`` per unit, everybody trades at ``p0`` (budget 0).
Otherwise the marginal bid (lowest value per unit, the latest of equals) is dropped with the
dearest units it used; the other winners pay its value per unit and the providers that still
sell receive ``min(that value, cost of the cheapest ask left without a sale)`` per unit.
Both branches pay providers at most what buyers pay, exactly, in integer millionths
(docs/pricing.md has the proofs and the measured trade-offs).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from pricing.engine.clearing import Clearing, clear_units


@dataclass(frozen=True)
class Reduced:
    """The outcome of a budget-safe round, in millionths per hour; prices are per vGPU-hour."""

    surplus: int
    won: tuple[bool, ...]
    bid_payments: tuple[int, ...]
    units_sold: tuple[int, ...]
    ask_payments: tuple[int, ...]
    vcg: Clearing
    buyer_price: int | None
    provider_price: int | None
    reduced: int | None  # index of the bid dropped by the trade reduction, if any


def _supply_to(ask_units: Sequence[int], ask_costs: Sequence[int], quantity: int) -> list[int]:
    """Return the units each ask sells when the cheapest ``quantity`` units are taken (ties: input order)."""
    sold = [0] * len(ask_units)
    for i in sorted(range(len(ask_units)), key=lambda i: (ask_costs[i], i)):
        sold[i] = min(ask_units[i], quantity)
        quantity -= sold[i]
    return sold


def _cheapest_unsold(ask_costs: Sequence[int], sold: Sequence[int]) -> int | None:
    """Return the lowest cost among asks that sell nothing, or None if every ask sells."""
    return min((c for c, y in zip(ask_costs, sold, strict=True) if y == 0), default=None)


def clear_reduced(
    ask_units: Sequence[int],
    ask_costs: Sequence[int],
    bid_units: Sequence[int],
    bid_values: Sequence[int],
    reference: int | None,
) -> Reduced:
    """Allocate and price one round with weak budget balance and individual rationality, exactly."""
    vcg = clear_units(ask_units, ask_costs, bid_units, bid_values, None)
    won = list(vcg.won)
    sold = list(vcg.units_sold)
    winners = [j for j, w in enumerate(won) if w]
    unsold = _cheapest_unsold(ask_costs, sold)
    candidates = [p for p in (reference, unsold) if p is not None]
    price = min(candidates) if candidates else None
    dearest_sold = max((c for c, y in zip(ask_costs, sold, strict=True) if y), default=None)
    lowest_value = min((bid_values[j] for j in winners), default=None)
    reduced = None
    if not winners:
        buyer_price = provider_price = None
    elif price is not None and dearest_sold <= price <= lowest_value:
        buyer_price = provider_price = price
    else:
        reduced = min(winners, key=lambda j: (bid_values[j], -j))
        won[reduced] = False
        quantity = sum(bid_units[j] for j, w in enumerate(won) if w)
        sold = _supply_to(ask_units, ask_costs, quantity)
        buyer_price = bid_values[reduced]
        left_out = _cheapest_unsold(ask_costs, sold)
        provider_price = buyer_price if left_out is None else min(buyer_price, left_out)
        if quantity == 0:
            buyer_price = provider_price = None
    bid_payments = tuple(buyer_price * bid_units[j] if w else 0 for j, w in enumerate(won))
    ask_payments = tuple(provider_price * y if y else 0 for y in sold)
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
        buyer_price=buyer_price,
        provider_price=provider_price,
        reduced=reduced,
    )
