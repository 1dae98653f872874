"""Carry claimed amounts from a retired Settlement deployment over to a new one.

Posted roots cannot change, so a new leaf format means a new deployment. Settlement version 3 keeps no claimed
amounts on chain: what an allocation was already paid travels in its leaf (``paid_before``). So the first batch
posted to the new contract reads what every allocation claimed on the old one (``CHAIN_MIGRATED_FROM_ADDRESS``:
version 2's ``claimed(index)``, or version 1's ``claimed(token, account)``) and puts it in the leaf. The old contract
must be paused first, so no claim lands there after it was read; anyone can compare the first DA copy's
``paid_before`` amounts with the old contract (it names it under ``carried_from``).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from web3.contract import Contract
from web3.exceptions import ContractLogicError

from ledger.chain.artifacts import SETTLEMENT_V1_CONTRACT, SETTLEMENT_V2_CONTRACT
from ledger.chain.client import contract_at
from ledger.chain.node import ChainConnection


class MigrationError(RuntimeError):
    """The migration cannot proceed safely."""


def claimed_on(old_v2: Contract, old_v1: Contract, leaves: Iterable[tuple[int, str, str]]) -> dict[int, int]:
    """Return ``index -> claimed`` (non-zero only) of each ``(index, token, account)`` on the paused old contract.

    ``old_v2`` and ``old_v1`` are the same address bound to the version 2 and version 1 ABIs: version 2 answers
    ``claimed(index)``, version 1 reverts on it (no such function) and answers ``claimed(token, account)``.
    """
    if not old_v2.functions.paused().call():
        raise MigrationError(
            f"Pause the old Settlement {old_v2.address} first, so no claim lands there after its amounts are read."
        )
    leaves = list(leaves)
    try:
        old_v2.functions.claimed(0).call()
        read = lambda index, token, account: old_v2.functions.claimed(index).call()  # noqa: E731
    except ContractLogicError:
        read = lambda index, token, account: old_v1.functions.claimed(token, account).call()  # noqa: E731
    carried = {}
    for index, token, account in leaves:
        amount = read(index, token, account)
        if amount:
            carried[index] = amount
    return carried


def carried_amounts(conn: ChainConnection, leaves: Iterable[tuple[int, str, str]]) -> tuple[str | None, dict[int, int]]:
    """Return the old contract's address and what each leaf's index claimed there, or (None, {}) without one."""
    address = settings.CHAIN_MIGRATED_FROM_ADDRESS
    if not address:
        return None, {}
    old_v2 = contract_at(conn.w3, SETTLEMENT_V2_CONTRACT, address)
    old_v1 = contract_at(conn.w3, SETTLEMENT_V1_CONTRACT, address)
    return old_v2.address, claimed_on(old_v2, old_v1, leaves)
