"""Carry claimed amounts from a retired Settlement deployment over to a new one (no Django).

Posted roots cannot change, so a new leaf format means a new deployment. Before the new contract's first
batch, the admin copies what every allocation already claimed on the old contract (read with its own
``claimed(token, account)``) into the new one under the allocation's index; the old contract must be paused
first so no claim lands there after it was read. Anyone can re-read both contracts to check the copy.
"""

from __future__ import annotations

from collections.abc import Mapping

from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from ledger.chain.client import send

# Allocations per seedClaimed transaction: about 25,000 gas each, well inside a block.
SEED_CHUNK = 500


class MigrationError(RuntimeError):
    """The migration cannot proceed safely."""


def claimed_carry_over(
    *, old: Contract, new: Contract, allocations: Mapping[tuple[str, str], int], sender: LocalAccount
) -> dict[int, int]:
    """Seed ``new`` with what each ``(token, account) -> index`` claimed on ``old``; return the non-zero ones."""
    if not old.functions.paused().call():
        raise MigrationError("Pause the old Settlement first, so no claim lands there after its amounts are read.")
    if new.functions.lastSeq().call() != new.functions.startSeq().call():
        raise MigrationError("The new Settlement already has a batch; claimed amounts can only be seeded before one.")
    carried = {}
    for (token, account), index in sorted(allocations.items(), key=lambda item: item[1]):
        amount = old.functions.claimed(token, account).call()
        if amount:
            carried[index] = amount
    items = sorted(carried.items())
    for start in range(0, len(items), SEED_CHUNK):
        chunk = items[start : start + SEED_CHUNK]
        send(new.w3, sender, new.functions.seedClaimed([index for index, _ in chunk], [amount for _, amount in chunk]))
    for index, amount in items:
        if new.functions.claimed(index).call() != amount:
            raise MigrationError(
                f"Allocation {index} reads {new.functions.claimed(index).call()} after seeding {amount}."
            )
    return carried
