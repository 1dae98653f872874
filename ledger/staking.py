"""Ledger-level JCT stake: the embedded default's stand-in for the on-chain stake (docs/reputation.md, staking gate).

A provider stakes JCT from its available balance into its `stake` account; an unstake request moves it to its
`unstaking` account, where it waits LEDGER_UNSTAKE_COOLDOWN_SECONDS (longer than the dispute window, so a provider
cannot pull its stake out from under a dispute) before `unstakes_release` returns it to the available balance. An
operator's slash takes from the stake first, then from the unstaking requests (newest first), into the platform's
`slashed` account, as the contract's `slash` does on chain. Every move is one balanced posting under the ledger's
row locks, keyed for idempotency.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ledger.currencies import Currency
from ledger.errors import InsufficientFunds, InvalidAmount
from ledger.models import Account, AccountKind, Transaction, TransactionKind, Unstake
from ledger.services import Leg, Posting, ledger_post

JCT = Currency.JCT


@dataclass(frozen=True)
class StakeBalance:
    staked: int  # counts for the staking gate
    unstaking: int  # waiting out the cool-down; slashable, not counted for the gate


def _amount(amount: int) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InvalidAmount(f"Stake amounts are positive integers of JCT base units, got {amount!r}.")
    return amount


def _key(idempotency_key: str) -> str:
    if not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 150:
        raise InvalidAmount("A stake operation needs an idempotency key of 1 to 150 characters.")
    return idempotency_key


def _lock_stake_accounts(user_id: int) -> list[Account]:
    """Lock the user's JCT available, stake and unstaking accounts in primary-key order (the ledger's lock order).

    The first statement waits for any transaction moving them; the second, with a fresh snapshot, also sees and
    locks an account such a transaction created (an unstake's first `unstaking` account). Creating accounts here
    instead would deadlock with that transaction.
    """
    kinds = [AccountKind.AVAILABLE, AccountKind.STAKE, AccountKind.UNSTAKING]
    query = Account.objects.select_for_update().filter(owner_id=user_id, currency=JCT, kind__in=kinds).order_by("pk")
    list(query.all())  # .all(): a new statement each time, not the queryset's cached rows
    return list(query.all())


def stake_balances(*, user_ids) -> dict[int, StakeBalance]:
    """Return each user's ledger-level stake (zero for a user who never staked)."""
    user_ids = set(user_ids)
    found: dict[int, dict[str, int]] = {}
    rows = Account.objects.filter(
        owner_id__in=user_ids, currency=JCT, kind__in=[AccountKind.STAKE, AccountKind.UNSTAKING]
    ).values_list("owner_id", "kind", "balance")
    for owner, kind, balance in rows:
        found.setdefault(owner, {})[kind] = int(balance)
    empty: dict[str, int] = {}
    return {
        user: StakeBalance(
            found.get(user, empty).get(AccountKind.STAKE, 0), found.get(user, empty).get(AccountKind.UNSTAKING, 0)
        )
        for user in user_ids
    }


def stake_add(*, user_id: int, amount: int, idempotency_key: str) -> bool:
    """Move `amount` JCT from the user's available balance into its stake; return False for a replay."""
    posting = Posting(
        kind=TransactionKind.STAKE,
        currency=JCT,
        idempotency_key=f"stake:{user_id}:{_key(idempotency_key)}",
        legs=(Leg(user_id, AccountKind.AVAILABLE, -_amount(amount)), Leg(user_id, AccountKind.STAKE, amount)),
        memo="Stake",
    )
    return ledger_post(posting).created


def unstake_request(*, user_id: int, amount: int, idempotency_key: str, now: datetime | None = None) -> Unstake:
    """Move `amount` JCT from the user's stake into unstaking for the cool-down; return the request (once per key)."""
    key = f"unstake:{user_id}:{_key(idempotency_key)}"
    posting = Posting(
        kind=TransactionKind.UNSTAKE,
        currency=JCT,
        idempotency_key=key,
        legs=(Leg(user_id, AccountKind.STAKE, -_amount(amount)), Leg(user_id, AccountKind.UNSTAKING, amount)),
        memo="Unstake request",
    )
    now = now or timezone.now()
    with transaction.atomic():
        if not ledger_post(posting).created:
            return Unstake.objects.get(idempotency_key=key)
        return Unstake.objects.create(
            user_id=user_id,
            amount=amount,
            idempotency_key=key,
            release_at=now + timedelta(seconds=settings.LEDGER_UNSTAKE_COOLDOWN_SECONDS),
        )


def unstakes_release(*, now: datetime | None = None) -> int:
    """Return every unstake whose cool-down is over (less what was slashed) to its user's available balance."""
    now = now or timezone.now()
    released = 0
    due = Unstake.objects.filter(released_at__isnull=True, release_at__lte=now).values_list("pk", "user_id")
    for pk, user_id in list(due):
        with transaction.atomic():
            _lock_stake_accounts(user_id)  # accounts before requests, as a slash locks them: no deadlock
            unstake = (
                Unstake.objects.select_for_update(skip_locked=True).filter(pk=pk, released_at__isnull=True).first()
            )
            if unstake is None:
                continue
            rest = int(unstake.amount) - int(unstake.slashed)
            if rest > 0:
                ledger_post(
                    Posting(
                        kind=TransactionKind.UNSTAKE_RELEASE,
                        currency=JCT,
                        idempotency_key=f"unstake-release:{unstake.pk}",
                        legs=(
                            Leg(unstake.user_id, AccountKind.UNSTAKING, -rest),
                            Leg(unstake.user_id, AccountKind.AVAILABLE, rest),
                        ),
                        memo="Unstaked after the cool-down",
                        metadata={"unstake": unstake.pk},
                    )
                )
            unstake.released_at = now
            unstake.save(update_fields=["released_at"])
            released += 1
    return released


def stake_slash(*, user_id: int, amount: int, idempotency_key: str, memo: str = "", metadata=None) -> bool:
    """Take `amount` JCT of the user's stake, then of its unstaking requests (newest first), for the platform.

    Refuses (InsufficientFunds) more than stake + unstaking. Returns False for a replay of the same key. Call it
    inside the caller's transaction when the slash must commit with the caller's own records.
    """
    _amount(amount)
    key = f"slash:{_key(idempotency_key)}"
    with transaction.atomic():
        # Lock the two accounts (and the pending requests) before reading what can be taken.
        accounts = {account.kind: account for account in _lock_stake_accounts(user_id)}
        pending = list(
            Unstake.objects.select_for_update()
            .filter(user_id=user_id, released_at__isnull=True)
            .order_by("-requested_at", "-pk")
        )
        staked = int(accounts[AccountKind.STAKE].balance) if AccountKind.STAKE in accounts else 0
        unstaking = int(accounts[AccountKind.UNSTAKING].balance) if AccountKind.UNSTAKING in accounts else 0
        from_stake = min(amount, staked)
        from_unstaking = amount - from_stake
        legs = [Leg(None, AccountKind.SLASHED, amount)]
        if from_stake:
            legs.append(Leg(user_id, AccountKind.STAKE, -from_stake))
        if from_unstaking:
            legs.append(Leg(user_id, AccountKind.UNSTAKING, -from_unstaking))
        posting = Posting(
            kind=TransactionKind.SLASH,
            currency=JCT,
            idempotency_key=key,
            legs=tuple(legs),
            memo=memo[:200] or "Stake slashed",
            metadata=metadata or {},
        )
        if Transaction.objects.filter(idempotency_key=key).exists():
            return False
        if amount > staked + unstaking:
            raise InsufficientFunds(
                f"The slash of {amount} JCT base units is more than the provider's stake: {staked} staked and "
                f"{unstaking} unstaking.",
                code="stake_insufficient",
                detail={"staked": staked, "unstaking": unstaking, "requested": amount},
            )
        ledger_post(posting)
        left = from_unstaking
        for unstake in pending:
            if left <= 0:
                break
            take = min(left, int(unstake.amount) - int(unstake.slashed))
            if take > 0:
                Unstake.objects.filter(pk=unstake.pk).update(slashed=F("slashed") + take)
                left -= take
    return True
