"""Exact PVCG clearing of one round on integer prices (millionths per vGPU-hour).

Notation: a bid asks for ``size`` units worth ``total = value * size``; V(q) is the
best bid total using exactly q units, C(q) the cost of the cheapest q units, and the
optimum is S* = max_q V(q) - C(q). Every participant's S* without it is derived from
a handful of arrays instead of one re-solve per participant (see docs/pricing.md).
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from pricing.engine.maxplus import NEG, IntArray, add_class, best_shifted, clamp_infeasible

# Callers keep price * (tradable units + cost-curve length) below this, so int64 never overflows.
MAX_MAGNITUDE = 1 << 59


@dataclass(frozen=True)
class Clearing:
    """The outcome of one round, in millionths of a currency unit per hour."""

    surplus: int
    won: tuple[bool, ...]
    bid_payments: tuple[int, ...]
    units_sold: tuple[int, ...]
    vcg_payments: tuple[int, ...]
    adjustments: tuple[int, ...]


@dataclass(frozen=True)
class _Supply:
    """Asks in merit order, each ask's offset in that order, and the cost curve C."""

    order: list[int]
    offsets: list[int]
    cost: IntArray


@dataclass(frozen=True)
class _BidClass:
    """Bids of one size, best first, and the running totals of their values."""

    size: int
    members: list[int]
    totals: IntArray


def curve_lengths(ask_units: Sequence[int], bid_units: Sequence[int]) -> tuple[int, int]:
    """Return the lengths of the demand curve V and of the cost curve C."""
    supply = sum(ask_units)
    demand = sum(bid_units)
    largest_ask = max(ask_units, default=0)
    return min(supply, demand) + 1, min(supply, demand + largest_ask) + 1


def _supply(units: Sequence[int], costs: Sequence[int], length: int) -> _Supply:
    """Sort asks by cost then input position and build C on 0..length-1."""
    order = sorted(range(len(units)), key=lambda i: (costs[i], i))
    offsets = [0] * len(units)
    running = 0
    blocks: list[tuple[int, int]] = []
    for i in order:
        offsets[i] = running
        if running < length - 1:
            blocks.append((costs[i], min(units[i], length - 1 - running)))
        running += units[i]
    unit_costs = np.repeat(
        np.array([c for c, _ in blocks], dtype=np.int64), np.array([n for _, n in blocks], dtype=np.int64)
    )
    cost = np.zeros(length, dtype=np.int64)
    np.cumsum(unit_costs, out=cost[1:])
    return _Supply(order, offsets, cost)


def _bid_classes(units: Sequence[int], values: Sequence[int], length: int) -> list[_BidClass]:
    """Group bids by size, best total first then input position, dropping those that can never trade."""
    by_size: dict[int, list[int]] = {}
    for j, size in enumerate(units):
        if size < length:
            by_size.setdefault(size, []).append(j)
    classes = []
    for size in sorted(by_size):
        members = sorted(by_size[size], key=lambda j: (-values[j], j))
        # One member beyond the most that fit is still needed to price the others.
        members = members[: (length - 1) // size + 1]
        totals = np.zeros(len(members) + 1, dtype=np.int64)
        np.cumsum(np.array([values[j] * size for j in members], dtype=np.int64), out=totals[1:])
        classes.append(_BidClass(size, members, totals))
    return classes


def _empty_demand(length: int) -> IntArray:
    """Return V for no bids: zero units are worth zero, any other quantity is infeasible."""
    v = np.full(length, NEG, dtype=np.int64)
    v[0] = 0
    return v


def _fold(v: IntArray, classes: Sequence[_BidClass]) -> IntArray:
    """Return V after adding every class in ``classes``."""
    for cls in classes:
        v, _ = add_class(v, cls.size, cls.totals)
    return v


def _without_each_class(classes: list[_BidClass], wanted: list[bool], length: int) -> Iterator[tuple[int, IntArray]]:
    """Yield (c, V without class c) for every wanted class, with O(m log m) class additions."""

    def visit(lo: int, hi: int, acc: IntArray) -> Iterator[tuple[int, IntArray]]:
        if not any(wanted[lo:hi]):
            return
        if hi - lo == 1:
            yield lo, acc
            return
        mid = (lo + hi) // 2
        yield from visit(lo, mid, _fold(acc, classes[mid:hi]))
        yield from visit(mid, hi, _fold(acc, classes[lo:mid]))

    yield from visit(0, len(classes), _empty_demand(length))


def optimum(
    ask_units: Sequence[int], ask_costs: Sequence[int], bid_units: Sequence[int], bid_values: Sequence[int]
) -> int:
    """Return the optimal social surplus S* of one market."""
    length, cost_length = curve_lengths(ask_units, bid_units)
    cost = _supply(ask_units, ask_costs, cost_length).cost[:length]
    v = _fold(_empty_demand(length), _bid_classes(bid_units, bid_values, length))
    return int(clamp_infeasible(v - cost).max())


def _bid_payments(
    classes: list[_BidClass], taken: list[int], v_length: int, cost: IntArray, s_star: int
) -> dict[int, int]:
    """Return the Clarke payment of every winning bid, keyed by bid index.

    With G(k) = best surplus of everything else when the class takes its top k bids,
    removing the winner at rank r leaves max(max_{k<=r} P(k)+G(k), max_{k>r} P(k+1)+G(k) - total_r).
    """
    payments: dict[int, int] = {}
    wanted = [k > 0 for k in taken]
    for c, v_without in _without_each_class(classes, wanted, v_length):
        cls = classes[c]
        members = len(cls.members)
        g = best_shifted(v_without, cost, cls.size, members - 1)
        keep_rank = np.maximum.accumulate(cls.totals[:members] + g)
        skip_rank = np.full(members + 1, NEG, dtype=np.int64)
        skip_rank[:members] = np.maximum.accumulate((cls.totals[1:] + g)[::-1])[::-1]
        winners = taken[c]
        own = cls.totals[1 : winners + 1] - cls.totals[:winners]
        without = np.maximum(keep_rank[:winners], skip_rank[1 : winners + 1] - own)
        for j, s_minus, total in zip(cls.members[:winners], without.tolist(), own.tolist(), strict=True):
            payments[j] = s_minus - (s_star - total)
    return payments


def _surplus_without_asks(
    supply: _Supply,
    units: Sequence[int],
    costs: Sequence[int],
    sold: list[int],
    v: IntArray,
    surplus_by_q: IntArray,
    s_star: int,
) -> list[int]:
    """Return S* without each ask; C without ask i is C(q) up to its offset, then C(q + u_i) - c_i*u_i."""
    without = [s_star] * len(units)
    best_before = np.maximum.accumulate(surplus_by_q)
    by_units: dict[int, list[int]] = {}
    for i, y in enumerate(sold):
        if y:
            by_units.setdefault(units[i], []).append(i)
    for u, asks in by_units.items():
        span = min(v.size, supply.cost.size - u)
        shifted = clamp_infeasible(v[:span] - supply.cost[u : u + span])
        best_after = np.full(span + 1, NEG, dtype=np.int64)
        best_after[:span] = np.maximum.accumulate(shifted[::-1])[::-1]
        for i in asks:
            start = supply.offsets[i]
            without[i] = max(int(best_before[start]), int(best_after[start + 1]) + costs[i] * u)
    return without


def clear_units(
    ask_units: Sequence[int],
    ask_costs: Sequence[int],
    bid_units: Sequence[int],
    bid_values: Sequence[int],
    max_cost: int | None,
) -> Clearing:
    """Allocate and price one round exactly; ``max_cost`` is the public reserve-price ceiling, if any."""
    length, cost_length = curve_lengths(ask_units, bid_units)
    supply = _supply(ask_units, ask_costs, cost_length)
    cost = supply.cost[:length]
    classes = _bid_classes(bid_units, bid_values, length)
    v = _empty_demand(length)
    taken_by_q = []
    for cls in classes:
        v, taken = add_class(v, cls.size, cls.totals)
        taken_by_q.append(taken)
    surplus_by_q = clamp_infeasible(v - cost)
    q_star = int(np.argmax(surplus_by_q))
    s_star = int(surplus_by_q[q_star])

    taken_counts = [0] * len(classes)
    q = q_star
    for c in reversed(range(len(classes))):
        taken_counts[c] = int(taken_by_q[c][q])
        q -= classes[c].size * taken_counts[c]
    bid_payments = _bid_payments(classes, taken_counts, length, cost, s_star)

    sold = [0] * len(ask_units)
    remaining = q_star
    for i in supply.order:
        sold[i] = min(ask_units[i], remaining)
        remaining -= sold[i]
    s_without = _surplus_without_asks(supply, ask_units, ask_costs, sold, v, surplus_by_q, s_star)
    vcg = [ask_costs[i] * sold[i] + s_star - s_without[i] for i in range(len(ask_units))]
    adjustments = [0] * len(ask_units)
    if max_cost is not None:
        total_units = sum(ask_units)
        total_cost = sum(u * c for u, c in zip(ask_units, ask_costs, strict=True))
        for i, (u, c) in enumerate(zip(ask_units, ask_costs, strict=True)):
            # The least favourable report (1 unit at the ceiling) can only add the last unit traded.
            q = total_units - u + 1
            if q < length and v[q] != NEG:
                gain = int(v[q]) - (total_cost - u * c) - max_cost - s_without[i]
                adjustments[i] = -max(0, gain)
    return Clearing(
        surplus=s_star,
        won=tuple(j in bid_payments for j in range(len(bid_units))),
        bid_payments=tuple(bid_payments.get(j, 0) for j in range(len(bid_units))),
        units_sold=tuple(sold),
        vcg_payments=tuple(vcg),
        adjustments=tuple(adjustments),
    )
