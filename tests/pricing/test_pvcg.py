"""Property tests of the PVCG engine against a brute-force reference on small markets."""

import contextlib
import itertools
import random
from collections.abc import Iterator, Sequence
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.engine import maxplus
from pricing.engine.clearing import optimum
from pricing.pvcg import Ask, Bid, Result, result_to_json
from pricing.pvcg import clear as engine_clear

CEILING = Decimal(4)
PRICES = st.integers(0, 16).map(lambda n: Decimal(n) / 4)
GRID = [Decimal(n) / 2 for n in range(9)]
# Small markets clear in well under a millisecond; no deadline because the test machine is shared.
EXAMPLES = settings(max_examples=150, deadline=None)


def clear(asks: Sequence[Ask], bids: Sequence[Bid], **kwargs) -> Result:
    """Clear with plain VCG (and the adjustment when given a ceiling): the mechanism this file checks."""
    return engine_clear(asks, bids, mechanism="vcg", **kwargs)


@st.composite
def markets(draw: st.DrawFn, max_asks: int = 4, max_bids: int = 6) -> tuple[list[Ask], list[Bid]]:
    """Draw a small market with many ties: prices on a quarter grid up to CEILING, supply scarce or ample."""
    capacity = st.integers(1, draw(st.sampled_from([1, 2, 4])))
    asks = [Ask(f"a{i}", draw(capacity), draw(PRICES)) for i in range(draw(st.integers(0, max_asks)))]
    sizes = st.sampled_from([1, 1, 2, 2, 3, 4])
    bids = [Bid(f"b{j}", draw(sizes), draw(PRICES)) for j in range(draw(st.integers(0, max_bids)))]
    return asks, bids


def brute_surplus(asks: Sequence[Ask], bids: Sequence[Bid]) -> Decimal:
    """Return the optimal surplus by trying every set of bids against the cheapest units."""
    unit_costs = sorted(a.cost for a in asks for _ in range(a.units))
    best = Decimal(0)
    for chosen in itertools.product((False, True), repeat=len(bids)):
        taken = [b for b, x in zip(bids, chosen, strict=True) if x]
        quantity = sum(b.units for b in taken)
        if quantity <= len(unit_costs):
            best = max(best, sum(b.value * b.units for b in taken) - sum(unit_costs[:quantity]))
    return best


def without(items: Sequence, index: int) -> list:
    """Return ``items`` less the one at ``index``."""
    return [x for n, x in enumerate(items) if n != index]


@contextlib.contextmanager
def divide_and_conquer_only() -> Iterator[None]:
    """Force the divide-and-conquer max-plus path even for tiny classes."""
    saved = maxplus.DIRECT_MAX_ITEMS, maxplus.DIRECT_MAX_SHIFTS
    maxplus.DIRECT_MAX_ITEMS = maxplus.DIRECT_MAX_SHIFTS = 0
    try:
        yield
    finally:
        maxplus.DIRECT_MAX_ITEMS, maxplus.DIRECT_MAX_SHIFTS = saved


def clear_both_ways(asks: Sequence[Ask], bids: Sequence[Bid], max_cost: Decimal | None = CEILING) -> Result:
    """Clear with the default max-plus paths and with divide and conquer only; both must agree exactly."""
    result = clear(asks, bids, max_cost=max_cost)
    with divide_and_conquer_only():
        assert clear(asks, bids, max_cost=max_cost) == result
    return result


@EXAMPLES
@given(markets())
def test_allocation_is_feasible_and_optimal(market):
    asks, bids = market
    result = clear_both_ways(asks, bids)
    best = brute_surplus(asks, bids)
    sold = [a.units_sold for a in result.asks]
    assert all(0 <= y <= a.units for y, a in zip(sold, asks, strict=True))
    assert sum(b.units for b, r in zip(bids, result.bids, strict=True) if r.won) == sum(sold)
    realised = sum(b.value * b.units for b, r in zip(bids, result.bids, strict=True) if r.won) - sum(
        a.cost * y for a, y in zip(asks, sold, strict=True)
    )
    assert result.social_surplus == realised == best
    micro = [int(a.cost * 10**6) for a in asks], [int(b.value * 10**6) for b in bids]
    assert optimum([a.units for a in asks], micro[0], [b.units for b in bids], micro[1]) == best * 10**6


@EXAMPLES
@given(markets())
def test_buyers_pay_clarke_pivot_and_never_more_than_value(market):
    asks, bids = market
    result = clear_both_ways(asks, bids)
    best = brute_surplus(asks, bids)
    for j, (bid, outcome) in enumerate(zip(bids, result.bids, strict=True)):
        if outcome.won:
            assert outcome.payment == brute_surplus(asks, without(bids, j)) - (best - bid.value * bid.units)
            assert 0 <= outcome.payment <= bid.value * bid.units
        else:
            assert outcome.payment == 0


@EXAMPLES
@given(markets())
def test_provider_vcg_payment_is_cost_plus_marginal_contribution(market):
    asks, bids = market
    result = clear_both_ways(asks, bids)
    best = brute_surplus(asks, bids)
    for i, (ask, outcome) in enumerate(zip(asks, result.asks, strict=True)):
        marginal = best - brute_surplus(without(asks, i), bids)
        assert outcome.vcg_payment - ask.cost * outcome.units_sold == marginal


@EXAMPLES
@given(markets())
def test_adjustment_charges_back_what_the_least_favourable_report_would_earn(market):
    asks, bids = market
    result = clear_both_ways(asks, bids)
    for i, outcome in enumerate(result.asks):
        others = without(asks, i)
        worst = Ask("worst", 1, CEILING)
        assert outcome.adjustment == brute_surplus(others, bids) - brute_surplus([*others, worst], bids)
        assert outcome.payment == outcome.vcg_payment + outcome.adjustment


@EXAMPLES
@given(markets(), st.data())
def test_least_favourable_report_leaves_zero_utility(market, data):
    asks, bids = market
    if not asks:
        return
    i = data.draw(st.integers(0, len(asks) - 1))
    asks[i] = Ask(asks[i].id, 1, CEILING)
    outcome = clear(asks, bids, max_cost=CEILING).asks[i]
    assert outcome.payment == CEILING * outcome.units_sold


@EXAMPLES
@given(markets(), st.data())
def test_adjustment_ignores_the_providers_own_report(market, data):
    asks, bids = market
    if not asks:
        return
    i = data.draw(st.integers(0, len(asks) - 1))
    before = clear(asks, bids, max_cost=CEILING).asks[i].adjustment
    asks[i] = Ask(asks[i].id, data.draw(st.integers(1, 6)), data.draw(PRICES))
    assert clear(asks, bids, max_cost=CEILING).asks[i].adjustment == before


@EXAMPLES
@given(markets(), st.sampled_from([None, CEILING]))
def test_providers_are_individually_rational(market, max_cost):
    asks, bids = market
    result = clear(asks, bids, max_cost=max_cost)
    for ask, outcome in zip(asks, result.asks, strict=True):
        assert outcome.payment >= ask.cost * outcome.units_sold


@EXAMPLES
@given(markets())
def test_adjustment_only_shrinks_the_deficit(market):
    asks, bids = market
    plain = clear(asks, bids)
    adjusted = clear(asks, bids, max_cost=CEILING)
    assert all(a.adjustment == 0 for a in plain.asks)
    assert all(a.adjustment <= 0 for a in adjusted.asks)
    assert adjusted.budget >= plain.budget
    assert [b.payment for b in adjusted.bids] == [b.payment for b in plain.bids]


@EXAMPLES
@given(markets(), st.sampled_from([None, CEILING]))
def test_budget_and_json_cover_every_participant(market, max_cost):
    asks, bids = market
    result = clear(asks, bids, max_cost=max_cost)
    assert result.budget == sum(b.payment for b in result.bids) - sum(a.payment for a in result.asks)
    out = result_to_json(result)
    assert list(out) == ["social_surplus", "bids", "asks", "budget"]
    assert list(out["bids"]) == [b.id for b in bids]
    assert list(out["asks"]) == [a.id for a in asks]
    paid = sum(Decimal(b["payment"]) for b in out["bids"].values())
    received = sum(Decimal(a["payment"]) for a in out["asks"].values())
    assert Decimal(out["budget"]) == paid - received
    for a in out["asks"].values():
        assert Decimal(a["payment"]) == Decimal(a["vcg_payment"]) + Decimal(a["adjustment"])


def test_winners_are_priced_against_the_best_loser_of_their_size():
    asks = [Ask("a0", 2, Decimal(0))]
    bids = [Bid("b0", 1, Decimal(5)), Bid("b1", 1, Decimal(4)), Bid("b2", 1, Decimal(3))]
    result = clear_both_ways(asks, bids)
    assert [(b.won, b.payment) for b in result.bids] == [(True, 3), (True, 3), (False, 0)]


def buyer_utility(asks: list[Ask], bids: list[Bid], j: int, true_bid: Bid) -> Decimal:
    """Return bid j's utility at its true value when the market clears on the given reports."""
    outcome = clear(asks, bids, max_cost=CEILING).bids[j]
    if not outcome.won:
        return Decimal(0)
    worth = true_bid.value * true_bid.units if bids[j].units >= true_bid.units else Decimal(0)
    return worth - outcome.payment


@EXAMPLES
@given(markets(), st.data())
def test_no_buyer_gains_by_misreporting(market, data):
    asks, bids = market
    if not bids:
        return
    j = data.draw(st.integers(0, len(bids) - 1))
    true_bid = bids[j]
    truthful = buyer_utility(asks, bids, j, true_bid)
    for units, value in itertools.product(range(1, true_bid.units + 3), GRID):
        bids[j] = Bid(true_bid.id, units, value)
        assert buyer_utility(asks, bids, j, true_bid) <= truthful


@EXAMPLES
@given(markets(), st.data())
def test_no_provider_gains_by_misreporting(market, data):
    asks, bids = market
    if not asks:
        return
    i = data.draw(st.integers(0, len(asks) - 1))
    true_ask = asks[i]

    def utility() -> Decimal:
        outcome = clear(asks, bids, max_cost=CEILING).asks[i]
        return outcome.payment - true_ask.cost * outcome.units_sold

    truthful = utility()
    for units, cost in itertools.product(range(1, true_ask.units + 1), GRID):
        asks[i] = Ask(true_ask.id, units, cost)
        assert utility() <= truthful


@EXAMPLES
@given(markets())
def test_same_input_gives_same_output(market):
    asks, bids = market
    assert result_to_json(clear(asks, bids, max_cost=CEILING)) == result_to_json(clear(asks, bids, max_cost=CEILING))


def naive_resolve(asks: list[Ask], bids: list[Bid]) -> tuple[int, list[int], list[int], list[int]]:
    """Return S*, S* without each bid, without each ask, and with each ask replaced by the worst report."""
    scale = 10**6

    def solve(market_asks: list[Ask], market_bids: list[Bid]) -> int:
        return optimum(
            [a.units for a in market_asks],
            [int(a.cost * scale) for a in market_asks],
            [b.units for b in market_bids],
            [int(b.value * scale) for b in market_bids],
        )

    worst = Ask("worst", 1, CEILING)
    return (
        solve(asks, bids),
        [solve(asks, without(bids, j)) for j in range(len(bids))],
        [solve(without(asks, i), bids) for i in range(len(asks))],
        [solve([*without(asks, i), worst], bids) for i in range(len(asks))],
    )


def test_fast_payments_match_a_naive_resolve_on_medium_markets():
    rng = random.Random(20240601)
    for _ in range(9):
        sizes = [rng.choice([1, 2, 3, 5, 8, 13]) for _ in range(rng.randint(20, 90))]
        bids = [Bid(f"b{j}", size, Decimal(rng.randint(0, 16)) / 4) for j, size in enumerate(sizes)]
        capacity = rng.choice([2, 6, 12])
        asks = [
            Ask(f"a{i}", rng.randint(1, capacity), Decimal(rng.randint(0, 16)) / 4) for i in range(rng.randint(5, 40))
        ]
        result = clear_both_ways(asks, bids)
        best, no_bid, no_ask, worst = naive_resolve(asks, bids)
        scale = 10**6
        assert result.social_surplus * scale == best
        for bid, outcome, s_minus in zip(bids, result.bids, no_bid, strict=True):
            expected = s_minus - (best - bid.value * bid.units * scale) if outcome.won else 0
            assert outcome.payment * scale == expected
        for ask, outcome, s_minus, s_worst in zip(asks, result.asks, no_ask, worst, strict=True):
            assert (outcome.vcg_payment - ask.cost * outcome.units_sold) * scale == best - s_minus
            assert outcome.adjustment * scale == s_minus - s_worst
