"""Claim gas of Settlement against its first version at 1,000, 10,000 and 100,000 leaves, printed."""

import pytest

from tests.contracts.claim_gas import measure
from tests.contracts.conftest import funded_account

# Goals at 100,000 leaves (Uniswap's MerkleDistributor: 93,179 for a fresh recipient on the same chain and compiler).
FIRST_CLAIM_GOAL = 93_000
# Sampled first claims per size here; benchmarks/settlement_bench.py samples the full 1%.
MAX_SAMPLE = 100


@pytest.mark.parametrize("size", [1_000, 10_000, 100_000])
def test_claim_gas_at_scale(chain, capsys, size):
    results = measure(chain.w3, funded_account(chain.w3, "gas"), size, max_sample=MAX_SAMPLE)

    current, v1 = results["Settlement"], results["SettlementV1"]
    with capsys.disabled():
        print(f"\nclaim gas at {size:,} leaves (proof depth {current.depth}), Settlement vs SettlementV1:")
        for label in ("first", "holder", "repeat", "mean_first", "max_first"):
            now, before = getattr(current, label), getattr(v1, label)
            print(f"  {label:>10}: {now:>9,.0f}  vs {before:>9,.0f}  ({now / before:.3f}x)")
        print(f"  second claim into a used slot: {current.second_in_slot:,}; mean over {current.sampled} first claims")
    for label in ("first", "holder", "repeat", "mean_first", "max_first"):
        assert getattr(current, label) < getattr(v1, label), label
    assert current.second_in_slot < current.first - 15_000  # a non-zero slot write instead of a fresh one
    if size == 100_000:
        assert current.first <= FIRST_CLAIM_GOAL
        assert current.max_first <= FIRST_CLAIM_GOAL
