"""Time PVCG clearing on random markets and compare it with a naive n+1 re-solve.

Run from the repository root: ``python -m benchmarks.pvcg_bench``.
"""

import os
import platform
import random
import statistics
import time
from decimal import Decimal

import numpy as np

from pricing.engine.clearing import optimum
from pricing.pvcg import Ask, Bid, Result, clear

SEED = 7
MAX_COST = Decimal(1)
SIZES = ((100, 21), (1_000, 9), (10_000, 3))
NAIVE_SIZE = 300
# Budget study: providers' costs below a ceiling of 0.50 while buyers value up to 1.00.
BUDGET_CEILING = Decimal("0.5")
BUDGET_SHAPES = ((5, 2), (30, 10), (300, 30), (300, 300))
BUDGET_SAMPLES = 50


def random_market(n_bids: int, n_asks: int, seed: int, cost_top: Decimal = Decimal(1)) -> tuple[list[Ask], list[Bid]]:
    """Return a market with units 1-8, values uniform on [0, 1) and costs on [0, cost_top), in millionths."""
    rng = random.Random(seed)

    def price(top: Decimal) -> Decimal:
        return Decimal(rng.randrange(int(top.scaleb(6)))).scaleb(-6)

    asks = [Ask(f"ask-{i}", rng.randint(1, 8), price(cost_top)) for i in range(n_asks)]
    bids = [Bid(f"bid-{j}", rng.randint(1, 8), price(Decimal(1))) for j in range(n_bids)]
    return asks, bids


def median_seconds(asks: list[Ask], bids: list[Bid], repetitions: int) -> float:
    """Return the median wall time of a full clearing (allocation and every payment)."""
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        clear(asks, bids, max_cost=MAX_COST)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def naive_clear(asks: list[Ask], bids: list[Bid], won: set[str]) -> tuple[list[Decimal], list[Decimal]]:
    """Price every participant by re-solving the market once in full and once without each of them.

    ``won`` holds the winning bid ids: with ties the optimal values alone do not say who won.
    """

    def solve(market_asks: list[Ask], market_bids: list[Bid]) -> int:
        return optimum(
            [a.units for a in market_asks],
            [int(a.cost.scaleb(6)) for a in market_asks],
            [b.units for b in market_bids],
            [int(b.value.scaleb(6)) for b in market_bids],
        )

    best = solve(asks, bids)
    bid_payments = []
    for j, bid in enumerate(bids):
        s_minus = solve(asks, bids[:j] + bids[j + 1 :])
        total = int(bid.value.scaleb(6)) * bid.units
        bid_payments.append(Decimal(s_minus - (best - total) if bid.id in won else 0).scaleb(-6))
    marginals = [Decimal(best - solve(asks[:i] + asks[i + 1 :], bids)).scaleb(-6) for i in range(len(asks))]
    return bid_payments, marginals


def agrees(fast: Result, asks: list[Ask], bid_payments: list[Decimal], marginals: list[Decimal]) -> bool:
    """Return whether the fast clearing priced everyone exactly as the naive re-solve did."""
    same_bids = [b.payment for b in fast.bids] == bid_payments
    fast_marginals = [a.vcg_payment - ask.cost * a.units_sold for a, ask in zip(fast.asks, asks, strict=True)]
    return same_bids and fast_marginals == marginals


def budget_table() -> None:
    """Print the mean surplus and budget with plain VCG (no ceiling) and with the PVCG adjustment."""
    ceiling = BUDGET_CEILING
    print(f"budget study, mean of {BUDGET_SAMPLES} markets: costs < {ceiling}, values < 1, max_cost {ceiling}")
    for n_bids, n_asks in BUDGET_SHAPES:
        surplus = vcg_budget = pvcg_budget = Decimal(0)
        for seed in range(BUDGET_SAMPLES):
            asks, bids = random_market(n_bids, n_asks, seed, ceiling)
            plain = clear(asks, bids)
            surplus += plain.social_surplus
            vcg_budget += plain.budget
            pvcg_budget += clear(asks, bids, max_cost=ceiling).budget
        means = [f"{total / BUDGET_SAMPLES:.3f}" for total in (surplus, vcg_budget, pvcg_budget)]
        print(f"{n_bids} bids x {n_asks} asks: surplus {means[0]}, budget VCG {means[1]}, budget PVCG {means[2]}")


def main() -> None:
    """Print clearing medians per market size, the naive baseline and speed-up, then the budget study."""
    print(f"PVCG clearing benchmark: python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} cpus")
    for n, repetitions in SIZES:
        asks, bids = random_market(n, n, SEED + n)
        seconds = median_seconds(asks, bids, repetitions)
        print(f"{n} bids x {n} asks: median {seconds:.4f} s over {repetitions} runs")

    asks, bids = random_market(NAIVE_SIZE, NAIVE_SIZE, SEED)
    fast_seconds = median_seconds(asks, bids, 9)
    fast = clear(asks, bids)
    start = time.perf_counter()
    bid_payments, marginals = naive_clear(asks, bids, {b.id for b in fast.bids if b.won})
    naive_seconds = time.perf_counter() - start
    same = agrees(fast, asks, bid_payments, marginals)
    label = f"{NAIVE_SIZE} bids x {NAIVE_SIZE} asks"
    print(f"{label}: fast median {fast_seconds:.4f} s (full clearing with adjustments)")
    print(f"{label}: naive n+1 re-solve ({2 * NAIVE_SIZE + 1} exact solves) {naive_seconds:.3f} s")
    print(f"speed-up over naive: {naive_seconds / fast_seconds:.0f}x; identical payments: {'yes' if same else 'NO'}")
    budget_table()


if __name__ == "__main__":
    main()
