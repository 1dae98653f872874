"""Hooks the ledger owns so that upper layers can join Proof of Contribution and the settlement DA copy.

The ledger never imports the apps above it. An upper app registers here (from its ``AppConfig.ready``):

- an **epoch share**: a fraction of each PoC epoch's JCT emission paid to participants other than providers
  (the data contributors' share). The epoch close calls `epoch_shares_take` once, before splitting the rest
  among providers, and posts and records the shares in the epoch's own database transaction.
- a **batch section**: extra content for a settlement batch's DA copy (salted commitments to the data
  contributions accepted since the last batch), computed inside the transaction that creates the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from ledger.currencies import Currency
from ledger.models import AccountKind, TransactionKind
from ledger.services import Leg, Posting


@dataclass(frozen=True)
class EpochShare:
    """A share of each epoch's emission: who scored what, and how to record what they were paid."""

    name: str
    # The fraction of the emission this share takes when anyone scored in it (a Decimal in [0, 1]).
    fraction: Callable[[], Decimal]
    # (start, end) -> {user id: score}; only positive scores are paid.
    scores: Callable[[datetime, datetime], dict[int, int]]
    # (start, end, {user id: amount paid}) -> None; called inside the epoch's database transaction.
    record: Callable[[datetime, datetime, dict[int, int]], None]


@dataclass(frozen=True)
class BatchSection:
    """A section of a settlement batch's DA copy: ``build(key=, seq=)`` returns its JSON value or None."""

    name: str
    build: Callable[..., Any]


_epoch_shares: dict[str, EpochShare] = {}
_batch_sections: dict[str, BatchSection] = {}


def epoch_share_register(share: EpochShare) -> None:
    """Register (or replace) an epoch share by name."""
    _epoch_shares[share.name] = share


def batch_section_register(section: BatchSection) -> None:
    """Register (or replace) a DA copy section by name."""
    _batch_sections[section.name] = section


@dataclass
class EpochShares:
    """What the registered shares take from one epoch: the postings to make and the records to write."""

    start: datetime
    end: datetime
    paid: dict[str, dict[int, int]] = field(default_factory=dict)
    postings: list[Posting] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(sum(amounts.values()) for amounts in self.paid.values())

    def record(self) -> None:
        """Let each share record what it paid; call inside the epoch's transaction, after posting."""
        for name, amounts in self.paid.items():
            _epoch_shares[name].record(self.start, self.end, amounts)


def _split(scores: dict[int, int], amount: int) -> dict[int, int]:
    """Split ``amount`` pro rata to positive ``scores`` exactly (floors, then largest remainders, ties by key)."""
    positive = {key: score for key, score in scores.items() if score > 0}
    total = sum(positive.values())
    if total <= 0 or amount <= 0:
        return {}
    shares = {key: divmod(amount * score, total) for key, score in positive.items()}
    left = amount - sum(base for base, _ in shares.values())
    lucky = set(sorted(shares, key=lambda key: (-shares[key][1], key))[:left])
    return {key: base + (key in lucky) for key, (base, _) in shares.items()}


def epoch_shares_take(*, start: datetime, end: datetime, emission: int) -> EpochShares:
    """Return what each registered share takes from ``emission`` for [start, end): nothing when nobody scored."""
    taken = EpochShares(start=start, end=end)
    left = emission
    for name in sorted(_epoch_shares):
        share = _epoch_shares[name]
        scores = share.scores(start, end)
        fraction = min(max(share.fraction(), Decimal(0)), Decimal(1))
        amount = min(int((Decimal(emission) * fraction).to_integral_value(ROUND_DOWN)), left)
        amounts = {user_id: paid for user_id, paid in _split(scores, amount).items() if paid > 0}
        if not amounts:
            continue
        left -= sum(amounts.values())
        taken.paid[name] = amounts
        taken.postings.extend(
            Posting(
                kind=TransactionKind.REWARD,
                currency=Currency.JCT,
                idempotency_key=f"poc-{name}:{start:%Y%m%dT%H%M%SZ}:{user_id}",
                legs=(Leg(None, AccountKind.REWARDS_POOL, -paid), Leg(user_id, AccountKind.EARNINGS, paid)),
                memo=f"Proof of Contribution {start:%Y-%m-%d %H:%M} UTC ({name})",
                metadata={"epoch_start": start.isoformat(), "epoch_end": end.isoformat(), "share": name},
            )
            for user_id, paid in sorted(amounts.items())
        )
    return taken


def batch_sections_build(*, key: str, seq: int) -> dict[str, Any]:
    """Return the registered sections' content for batch ``seq`` (those that return None are left out)."""
    built = {}
    for name in sorted(_batch_sections):
        value = _batch_sections[name].build(key=key, seq=seq)
        if value is not None:
            built[name] = value
    return built
