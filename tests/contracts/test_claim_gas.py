"""Claim gas of Settlement against its first version at the proof depths of 1,000, 10,000 and 100,000 leaves.

Cheap on purpose: a 1,000-account tree, padded with random siblings to the proof depth of the larger sizes
(claim_gas.PaddedTree: the contract's gas depends on the proof's depth, not on how many leaves sit beside it).
benchmarks/settlement_bench.py measures the same on real trees of 1,000, 10,000 and 100,000 leaves with the
full 1% sample; the figures agree to within the cost of a proof one level shorter (about 600 gas).
"""

import pytest

from tests.contracts.claim_gas import measure
from tests.contracts.conftest import funded_account

# Goal at 100,000 leaves (Uniswap's MerkleDistributor: 93,179 for a fresh recipient on the same chain and compiler).
FIRST_CLAIM_GOAL = 93_000
ACCOUNTS = 1_000


@pytest.mark.parametrize(
    ("leaves", "depth"), [(1_000, None), (10_000, 14), (100_000, 17)], ids=["1k", "10k-depth", "100k-depth"]
)
def test_claim_gas_at_scale(chain, capsys, leaves, depth):
    results = measure(chain.w3, funded_account(chain.w3, "gas"), ACCOUNTS, depth=depth)

    current, v2, v1 = results["Settlement"], results["SettlementV2"], results["SettlementV1"]
    with capsys.disabled():
        shape = "a real tree" if depth is None else f"{ACCOUNTS:,} accounts padded to the depth of {leaves:,} leaves"
        print(f"\nclaim gas at proof depth {current.depth} ({shape}), Settlement vs SettlementV2 vs SettlementV1:")
        for label in ("first", "holder", "repeat", "mean_first", "max_first"):
            now, middle, before = getattr(current, label), getattr(v2, label), getattr(v1, label)
            print(f"  {label:>10}: {now:>9,.0f}  vs {middle:>9,.0f}  vs {before:>9,.0f}  ({now / before:.3f}x V1)")
        print(f"  second claim into a used slot: {current.second_in_slot:,}; mean over {current.sampled} first claims")
    for label in ("first", "holder", "repeat", "mean_first", "max_first"):
        assert getattr(current, label) < getattr(v1, label), label
    for label in ("first", "repeat", "mean_first", "max_first"):
        assert getattr(current, label) <= getattr(v2, label), label
    assert current.second_in_slot < current.first - 15_000  # a non-zero slot write instead of a fresh one
    if leaves == 100_000:
        assert current.depth == v1.depth == 17
        assert current.first <= FIRST_CLAIM_GOAL
        assert current.max_first <= FIRST_CLAIM_GOAL
