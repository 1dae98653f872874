"""Deviation and shill searches on the clearing engine (pure): how much a trader gains by misreporting.

Used by the property tests (a bounded number of markets) and by ``benchmarks/pvcg_bench.py`` (the full search).
Utilities are in millionths per hour and measured on true types: a buyer values its rental at
``value * units`` only if it gets at least the units it needs; a provider's cost is ``cost`` per unit sold.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from pricing.pvcg import TRADE_REDUCTION, Ask, Bid, Result, clear

TICK = Decimal("0.000001")
SCALES = (Decimal("0.5"), Decimal("0.75"), Decimal("0.9"), Decimal("1.1"), Decimal("1.5"), Decimal(2), Decimal(3))
LIMIT = Decimal(1_000_000)


@dataclass(frozen=True)
class Search:
    """Deviations tried, how many paid off, and the largest gain (millionths per hour)."""

    tried: int = 0
    profitable: int = 0
    largest_gain: int = 0

    def add(self, gain: int) -> "Search":
        """Return this search with one more deviation of ``gain`` counted."""
        return Search(self.tried + 1, self.profitable + (gain > 0), max(self.largest_gain, gain))

    def merge(self, other: "Search") -> "Search":
        """Return the two searches combined."""
        return Search(
            self.tried + other.tried, self.profitable + other.profitable, max(self.largest_gain, other.largest_gain)
        )


def _millionths(amount: Decimal) -> int:
    return int(amount.scaleb(6))


def buyer_utility(result: Result, j: int, true: Bid, reported_units: int) -> int:
    """Return what bid ``j`` gains on its true type: its value if it got the units it needs, less what it paid."""
    outcome = result.bids[j]
    if not outcome.won:
        return 0
    worth = true.value * true.units if reported_units >= true.units else Decimal(0)
    return _millionths(worth - outcome.payment)


def provider_utility(result: Result, i: int, true: Ask) -> int:
    """Return what ask ``i`` gains on its true type: its payment less its true cost of the units sold."""
    outcome = result.asks[i]
    return _millionths(outcome.payment - true.cost * outcome.units_sold)


def _prices(true: Decimal, others: Sequence[Decimal]) -> Iterator[Decimal]:
    """Yield the scaled reports and one tick above and below every other report, within the engine's range."""
    seen = {true}
    candidates = [(true * s).quantize(TICK) for s in SCALES]
    for other in others:
        candidates += [other - TICK, other + TICK]
    for price in candidates:
        if 0 <= price <= LIMIT and price not in seen:
            seen.add(price)
            yield price


def deviation_search(
    asks: Sequence[Ask],
    bids: Sequence[Bid],
    *,
    mechanism: str = TRADE_REDUCTION,
    reference_price: Decimal | None = None,
    traders: int | None = None,
) -> tuple[Search, Search]:
    """Try every misreport of every buyer and provider (or the first ``traders`` of each); return both searches."""
    asks, bids = list(asks), list(bids)

    def run(a: list[Ask], b: list[Bid]) -> Result:
        return clear(a, b, mechanism=mechanism, reference_price=reference_price)

    truthful = run(asks, bids)
    prices = [a.cost for a in asks] + [b.value for b in bids]
    buyers = Search()
    for j, true in enumerate(bids[:traders]):
        honest = buyer_utility(truthful, j, true, true.units)
        reports = [replace(true, value=p) for p in _prices(true.value, prices)]
        reports += [replace(true, units=u) for u in (true.units - 1, true.units + 1) if 1 <= u <= 8]
        for report in reports:
            outcome = run(asks, [*bids[:j], report, *bids[j + 1 :]])
            buyers = buyers.add(buyer_utility(outcome, j, true, report.units) - honest)
    providers = Search()
    for i, true in enumerate(asks[:traders]):
        honest = provider_utility(truthful, i, true)
        reports = [replace(true, cost=p) for p in _prices(true.cost, prices)]
        reports += [replace(true, units=u) for u in range(1, true.units)]
        for report in reports:
            outcome = run([*asks[:i], report, *asks[i + 1 :]], bids)
            providers = providers.add(provider_utility(outcome, i, true) - honest)
    return buyers, providers


def shill_gain(
    asks: Sequence[Ask],
    bids: Sequence[Bid],
    i: int,
    *,
    mechanism: str = TRADE_REDUCTION,
    reference_price: Decimal | None = None,
) -> int:
    """Return the most provider ``i`` gains by adding one fake bid of its own (payments on both sides counted).

    The fake bid tries 1-8 units at one tick above and below every report and at the reference price. When
    it wins, the provider pays for it and gets nothing of value back (serving yourself is worth nothing).
    """
    asks, bids = list(asks), list(bids)
    true = asks[i]
    honest = provider_utility(clear(asks, bids, mechanism=mechanism, reference_price=reference_price), i, true)
    prices = {p for x in [a.cost for a in asks] + [b.value for b in bids] for p in (x - TICK, x + TICK) if p >= 0}
    if reference_price is not None:
        prices.add(reference_price)
    best = 0
    for units in range(1, 9):
        for price in sorted(prices):
            shill = Bid("shill", units, price)
            outcome = clear(asks, [*bids, shill], mechanism=mechanism, reference_price=reference_price)
            gain = provider_utility(outcome, i, true) - _millionths(outcome.bids[-1].payment) - honest
            best = max(best, gain)
    return best
