"""Property tests of the default (budget-safe) mechanism: weak budget balance, IR and feasibility, exactly."""

import random
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.deviation import deviation_search, shill_gain
from pricing.pvcg import Ask, Bid, clear, result_to_json

TICK = Decimal("0.000001")
# A coarse grid makes ties common; a fine one reaches the tick-sized differences.
COARSE = st.integers(0, 12).map(lambda n: Decimal(n) / 4)
FINE = st.integers(0, 3_000_000).map(lambda n: Decimal(n).scaleb(-6))
EXAMPLES = settings(max_examples=120, deadline=None)


@st.composite
def markets(draw: st.DrawFn, max_side: int = 40) -> tuple[list[Ask], list[Bid], Decimal | None]:
    """Draw 1-40 asks and 1-40 bids, units 1-8, on a tied or a fine price grid, with or without a reference."""
    prices = draw(st.sampled_from([COARSE, FINE]))
    n_asks = draw(st.integers(1, max_side))
    n_bids = draw(st.integers(1, max_side))
    asks = [Ask(f"a{i}", draw(st.integers(1, 8)), draw(prices)) for i in range(n_asks)]
    bids = [Bid(f"b{j}", draw(st.integers(1, 8)), draw(prices)) for j in range(n_bids)]
    reference = draw(st.none() | prices)
    return asks, bids, reference


def check_round(asks: list[Ask], bids: list[Bid], reference: Decimal | None) -> None:
    """Assert budget balance, individual rationality, feasibility and the output identities on one market."""
    result = clear(asks, bids, reference_price=reference)
    paid = sum(b.payment for b in result.bids)
    received = sum(a.payment for a in result.asks)
    assert result.budget == paid - received >= 0
    for bid, outcome in zip(bids, result.bids, strict=True):
        assert 0 <= outcome.payment <= bid.value * bid.units if outcome.won else outcome.payment == 0
    for ask, outcome in zip(asks, result.asks, strict=True):
        assert 0 <= outcome.units_sold <= ask.units
        assert outcome.payment >= ask.cost * outcome.units_sold
        assert outcome.payment == outcome.vcg_payment + outcome.adjustment
        if outcome.units_sold == 0:
            assert outcome.payment == 0
    assert sum(b.units for b, o in zip(bids, result.bids, strict=True) if o.won) == sum(
        a.units_sold for a in result.asks
    )
    won_value = sum(b.value * b.units for b, o in zip(bids, result.bids, strict=True) if o.won)
    sold_cost = sum(a.cost * o.units_sold for a, o in zip(asks, result.asks, strict=True))
    assert result.social_surplus == won_value - sold_cost >= 0
    # Every amount is a whole number of millionths and the JSON says the same.
    for amount in [result.budget] + [b.payment for b in result.bids] + [a.payment for a in result.asks]:
        assert amount == amount.quantize(TICK)
    assert Decimal(result_to_json(result)["budget"]) == result.budget


@EXAMPLES
@given(markets())
def test_weak_budget_balance_individual_rationality_and_feasibility(market):
    check_round(*market)


@settings(max_examples=60, deadline=None)
@given(markets(max_side=3))
def test_thin_markets_with_many_ties(market):
    check_round(*market)


def test_every_size_from_1x1_to_40x40():
    rng = random.Random(9)
    for n in range(1, 41):
        asks = [Ask(f"a{i}", rng.randint(1, 8), Decimal(rng.randrange(8)) / 4) for i in range(n)]
        bids = [Bid(f"b{j}", rng.randint(1, 8), Decimal(rng.randrange(12)) / 4) for j in range(n)]
        check_round(asks, bids, Decimal(rng.randrange(12)) / 4)
        check_round(asks, bids, None)


def test_a_lone_ask_and_bid_trade_at_the_reference_price_whoever_reports_what():
    for cost, value in [("0", "100"), ("0.4", "0.6"), ("0.5", "0.75")]:
        asks, bids = [Ask("node", 1, Decimal(cost))], [Bid("rental", 1, Decimal(value))]
        result = clear(asks, bids, reference_price=Decimal("0.5"))
        assert result.bids[0].won and result.bids[0].payment == result.asks[0].payment == Decimal("0.5")
        assert result.budget == 0


def test_the_money_pump_from_the_issue_is_closed():
    # One ask at 0, one bid at 100: plain VCG paid the provider 100 and charged the buyer 0.
    vcg = clear([Ask("node", 1, Decimal(0))], [Bid("self", 1, Decimal(100))], mechanism="vcg")
    assert vcg.budget == Decimal(-100)
    safe = clear([Ask("node", 1, Decimal(0))], [Bid("self", 1, Decimal(100))], reference_price=Decimal(1))
    assert (safe.bids[0].payment, safe.asks[0].payment, safe.budget) == (Decimal(1), Decimal(1), 0)
    # At the pool ceiling four self-rented vGPUs no longer earn anything.
    four = clear([Ask("node", 4, Decimal(0))], [Bid("self", 4, Decimal(10_000))], reference_price=Decimal(1))
    assert four.asks[0].payment == four.bids[0].payment


def test_a_bid_below_the_price_drops_out_and_the_price_follows_the_cheapest_unsold_ask():
    asks = [Ask("a", 2, Decimal("0.1")), Ask("b", 2, Decimal("0.3"))]
    bids = [Bid("x", 1, Decimal("0.9")), Bid("y", 1, Decimal("0.8")), Bid("z", 2, Decimal("0.4"))]
    # All four units trade efficiently and every ask sells, so the price is the reference 0.6; z (0.4) would not
    # pay it and drops out; then b sells nothing and its ask 0.3 becomes the price for everyone.
    result = clear(asks, bids, reference_price=Decimal("0.6"))
    assert [(b.won, b.payment) for b in result.bids] == [(True, Decimal("0.3")), (True, Decimal("0.3")), (False, 0)]
    assert [(a.units_sold, a.payment) for a in result.asks] == [(2, Decimal("0.6")), (0, 0)]
    assert result.budget == 0


def test_when_supply_at_the_price_is_short_the_newest_bid_waits_whatever_it_bids():
    asks = [Ask("a", 1, Decimal("0.1")), Ask("b", 1, Decimal("0.8"))]
    for late_value in ("0.9", "5"):
        bids = [Bid("old", 1, Decimal("0.9")), Bid("new", 1, Decimal(late_value))]
        # Both trade efficiently and every ask sells, so the price is the reference 0.5; b's 0.8 is above it, so
        # one bid must go, by queue order. Then b sells nothing and its 0.8 becomes the price.
        result = clear(asks, bids, reference_price=Decimal("0.5"))
        assert [(b.won, b.payment) for b in result.bids] == [(True, Decimal("0.8")), (False, 0)]
        assert [(a.units_sold, a.payment) for a in result.asks] == [(1, Decimal("0.8")), (0, 0)]


@settings(max_examples=8, deadline=None)
@given(markets(max_side=4))
def test_bounded_deviation_search_stays_within_the_documented_bound(market):
    asks, bids, reference = market
    buyers, providers = deviation_search(asks, bids, reference_price=reference, traders=2)
    assert buyers.tried + providers.tried > 0
    # docs/pricing.md: a misreport moves the one price by at most the gap to the next report, so no trader
    # gains more than (top price - lowest price) on the 8 units it can trade.
    reports = [a.cost for a in asks] + [b.value for b in bids] + ([reference] if reference is not None else [])
    bound = int(((max(reports) - min(reports)) * 8).scaleb(6))
    assert buyers.largest_gain <= bound and providers.largest_gain <= bound


def test_unit_traders_cannot_gain_by_misreporting_against_a_reference():
    rng = random.Random(3)
    for _ in range(6):
        asks = [Ask(f"a{i}", 1, Decimal(rng.randrange(8)) / 8) for i in range(4)]
        bids = [Bid(f"b{j}", 1, Decimal(rng.randrange(12)) / 8) for j in range(4)]
        buyers, providers = deviation_search(asks, bids, reference_price=Decimal("0.5"))
        assert buyers.profitable == 0, buyers
        assert providers.profitable == 0, providers


def test_a_shill_bid_never_pays_in_a_thin_market():
    for cost, value in [("0", "100"), ("0.2", "0.9"), ("0.45", "0.5")]:
        asks = [Ask("node", 2, Decimal(cost))]
        bids = [Bid("real", 1, Decimal(value))]
        assert shill_gain(asks, bids, 0, reference_price=Decimal("0.5")) <= 0
