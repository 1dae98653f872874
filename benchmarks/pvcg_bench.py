"""Time PVCG clearing on random markets and compare it with a naive n+1 re-solve; measure the default mechanism.

Beyond timings: the VCG budget study, the share of the optimal surplus the budget-safe default keeps and
the market account's net per round, the full deviation search, shill bids and starvation across rounds.

Run from the repository root: ``python -m benchmarks.pvcg_bench``.
"""

import os
import platform
import random
import statistics
import time
from decimal import Decimal

import numpy as np

from pricing.deviation import Search, deviation_search, shill_gain
from pricing.engine.clearing import optimum
from pricing.pvcg import TRADE_REDUCTION, VCG, Ask, Bid, Result, clear

SEED = 7
MAX_COST = Decimal(1)
SIZES = ((100, 21), (1_000, 9), (10_000, 3))
NAIVE_SIZE = 300
# Budget study: providers' costs below a ceiling of 0.50 while buyers value up to 1.00.
BUDGET_CEILING = Decimal("0.5")
BUDGET_SHAPES = ((5, 2), (30, 10), (300, 30), (300, 300))
BUDGET_SAMPLES = 50
# Surplus share and market account net of the default mechanism: 50 markets per size, costs and values on [0, 1).
SHARE_SIZES = (1, 2, 5, 10, 20, 40, 100, 300)
SHARE_SAMPLES = 50
REFERENCES = (None, Decimal("0.5"))
# Full deviation search (every trader of every market) and the shill search.
DEVIATION_SIZES = ((1, 20), (2, 20), (4, 12), (8, 6), (20, 3))
SHILL_SIZES = ((1, 30), (2, 30), (3, 30), (20, 10), (40, 5))
# Starvation: rounds of a pool whose supply is re-offered each round while bids arrive and wait.
STARVATION_ROUNDS = 400
STARVATION_DEADLINE = 120


def random_market(n_bids: int, n_asks: int, seed: int, cost_top: Decimal = Decimal(1)) -> tuple[list[Ask], list[Bid]]:
    """Return a market with units 1-8, values uniform on [0, 1) and costs on [0, cost_top), in millionths."""
    rng = random.Random(seed)

    def price(top: Decimal) -> Decimal:
        return Decimal(rng.randrange(int(top.scaleb(6)))).scaleb(-6)

    asks = [Ask(f"ask-{i}", rng.randint(1, 8), price(cost_top)) for i in range(n_asks)]
    bids = [Bid(f"bid-{j}", rng.randint(1, 8), price(Decimal(1))) for j in range(n_bids)]
    return asks, bids


def median_seconds(asks: list[Ask], bids: list[Bid], repetitions: int, mechanism: str = VCG) -> float:
    """Return the median wall time of a full clearing (allocation and every payment)."""
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        clear(asks, bids, max_cost=MAX_COST, mechanism=mechanism, reference_price=Decimal("0.5"))
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
            plain = clear(asks, bids, mechanism=VCG)
            surplus += plain.social_surplus
            vcg_budget += plain.budget
            pvcg_budget += clear(asks, bids, max_cost=ceiling, mechanism=VCG).budget
        means = [f"{total / BUDGET_SAMPLES:.3f}" for total in (surplus, vcg_budget, pvcg_budget)]
        print(f"{n_bids} bids x {n_asks} asks: surplus {means[0]}, budget VCG {means[1]}, budget PVCG {means[2]}")


def share_table() -> None:
    """Print the share of the optimal surplus the default mechanism keeps and the market account's net per round."""
    print(f"surplus share kept (true values) and market account net per round, {SHARE_SAMPLES} markets per size:")
    for n in SHARE_SIZES:
        for reference in REFERENCES:
            shares, budgets, vcg_budgets, reduced = [], [], [], 0
            for seed in range(SHARE_SAMPLES):
                asks, bids = random_market(n, n, 1_000 + seed)
                safe = clear(asks, bids, reference_price=reference)
                plain = clear(asks, bids, mechanism=VCG)
                if plain.social_surplus > 0:
                    shares.append(safe.social_surplus / plain.social_surplus)
                budgets.append(safe.budget)
                vcg_budgets.append(plain.budget)
                reduced += sum(b.won for b in plain.bids) != sum(b.won for b in safe.bids)
            mean = sum(shares) / len(shares) if shares else Decimal(1)
            worst = min(shares, default=Decimal(1))
            print(
                f"{n} x {n}, reference {reference}: share mean {mean:.2%} worst {worst:.2%}; "
                f"rounds reduced {reduced}/{SHARE_SAMPLES}; market net per round mean "
                f"{sum(budgets) / SHARE_SAMPLES:.4f} min {min(budgets):.4f} (plain VCG mean "
                f"{sum(vcg_budgets) / SHARE_SAMPLES:.4f} min {min(vcg_budgets):.4f})"
            )


def deviation_table() -> None:
    """Print the full deviation search: share of profitable misreports and the largest gain, per side."""
    print("deviation search (values/costs x0.5..x3, one tick above/below every other report, units changed):")
    for n, samples in DEVIATION_SIZES:
        for reference in REFERENCES:
            buyers, providers = Search(), Search()
            for seed in range(samples):
                asks, bids = random_market(n, n, 5_000 + seed)
                b, p = deviation_search(asks, bids, reference_price=reference)
                buyers, providers = buyers.merge(b), providers.merge(p)
            print(
                f"{n} x {n} ({samples} markets), reference {reference}: buyers {buyers.profitable}/{buyers.tried} "
                f"profitable, largest gain {buyers.largest_gain / 1e6:.6f}; providers {providers.profitable}/"
                f"{providers.tried}, largest gain {providers.largest_gain / 1e6:.6f}"
            )


def shill_table() -> None:
    """Print what a provider gains by adding one fake bid of its own, payments on both sides counted."""
    print("shill bids (provider 0 adds one fake bid: 1-8 units at one tick around every report or the reference):")
    for n, samples in SHILL_SIZES:
        for reference in REFERENCES:
            gains = []
            for seed in range(samples):
                asks, bids = random_market(n, n, 9_000 + seed)
                gains.append(shill_gain(asks, bids, 0, reference_price=reference))
            profitable = sum(g > 0 for g in gains)
            print(
                f"{n} x {n} ({samples} markets), reference {reference}: profitable in {profitable}, "
                f"largest gain {max(gains) / 1e6:.6f} USDC/h"
            )


def starvation_table() -> None:
    """Simulate rounds of one pool and report how long bids wait, above all the marginal bid a reduction drops."""
    print(f"starvation: {STARVATION_ROUNDS} rounds, supply re-offered, bids wait up to {STARVATION_DEADLINE} rounds")
    for reference in REFERENCES:
        rng = random.Random(11)
        asks = [Ask(f"ask-{i}", rng.randint(1, 8), Decimal(rng.randrange(10**6)).scaleb(-6)) for i in range(10)]
        waiting: list[tuple[Bid, int]] = []
        waits, dropped_waits, expired, next_id = [], [], 0, 0
        dropped_ids: set[str] = set()
        for round_no in range(STARVATION_ROUNDS):
            for _ in range(rng.randint(2, 8)):
                value = Decimal(rng.randrange(10**6)).scaleb(-6)
                waiting.append((Bid(f"bid-{next_id}", rng.randint(1, 4), value), round_no))
                next_id += 1
            bids = [b for b, _ in waiting]
            safe = clear(asks, bids, reference_price=reference)
            efficient = clear(asks, bids, mechanism=VCG)
            for b, e in zip(safe.bids, efficient.bids, strict=True):
                if e.won and not b.won:
                    dropped_ids.add(b.id)
            still = []
            for (bid, arrived), outcome in zip(waiting, safe.bids, strict=True):
                if outcome.won:
                    waits.append(round_no - arrived)
                    if bid.id in dropped_ids:
                        dropped_waits.append(round_no - arrived)
                elif round_no - arrived >= STARVATION_DEADLINE:
                    expired += 1
                    if bid.id in dropped_ids:
                        dropped_waits.append(STARVATION_DEADLINE)
                else:
                    still.append((bid, arrived))
            waiting = still
        dropped_waits.sort()
        print(
            f"reference {reference}: {len(waits)} bids traded, mean wait {statistics.mean(waits):.2f} rounds; "
            f"{len(dropped_ids)} bids were dropped as the marginal bid at least once: median wait "
            f"{statistics.median(dropped_waits) if dropped_waits else 0} rounds, max {max(dropped_waits, default=0)} "
            f"({sum(w >= STARVATION_DEADLINE for w in dropped_waits)} expired unserved); {expired} bids expired in all"
        )


def main() -> None:
    """Print clearing medians per market size, the naive baseline and speed-up, then the budget study."""
    print(f"PVCG clearing benchmark: python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} cpus")
    for n, repetitions in SIZES:
        asks, bids = random_market(n, n, SEED + n)
        seconds = median_seconds(asks, bids, repetitions)
        default = median_seconds(asks, bids, repetitions, TRADE_REDUCTION)
        print(
            f"{n} bids x {n} asks: median {seconds:.4f} s (vcg), {default:.4f} s (default, budget-safe) "
            f"over {repetitions} runs"
        )

    asks, bids = random_market(NAIVE_SIZE, NAIVE_SIZE, SEED)
    fast_seconds = median_seconds(asks, bids, 9)
    fast = clear(asks, bids, mechanism=VCG)
    start = time.perf_counter()
    bid_payments, marginals = naive_clear(asks, bids, {b.id for b in fast.bids if b.won})
    naive_seconds = time.perf_counter() - start
    same = agrees(fast, asks, bid_payments, marginals)
    label = f"{NAIVE_SIZE} bids x {NAIVE_SIZE} asks"
    print(f"{label}: fast median {fast_seconds:.4f} s (full clearing with adjustments)")
    print(f"{label}: naive n+1 re-solve ({2 * NAIVE_SIZE + 1} exact solves) {naive_seconds:.3f} s")
    print(f"speed-up over naive: {naive_seconds / fast_seconds:.0f}x; identical payments: {'yes' if same else 'NO'}")
    budget_table()
    share_table()
    deviation_table()
    shill_table()
    starvation_table()


if __name__ == "__main__":
    main()
