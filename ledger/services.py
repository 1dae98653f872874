"""Ledger writes: every balance change is a balanced transaction posted under row locks."""

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from ledger.currencies import DECIMALS, currency_decimals, from_base_units
from ledger.errors import IdempotencyKeyReused, InsufficientFunds, InvalidAmount, UnbalancedTransaction
from ledger.models import USER_KINDS, Account, AccountKind, Entry, Transaction, TransactionKind

# How often a bulk posting is retried when a concurrent writer inserted one of its keys first.
_BULK_ATTEMPTS = 3


@dataclass(frozen=True)
class Leg:
    account_id: int
    amount: int  # signed base units: positive credits the account, negative debits it


@dataclass(frozen=True)
class Posting:
    kind: str
    currency: str
    idempotency_key: str
    legs: tuple[Leg, ...]
    memo: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """Return a digest of what this posting moves, to tell a replay from a reused key."""
        legs = sorted((leg.account_id, leg.amount) for leg in self.legs)
        payload = json.dumps([self.kind, self.currency, legs], separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class PostResult:
    transaction: Transaction
    created: bool  # False when the idempotency key had already been posted (a replay)


@dataclass(frozen=True)
class BulkResult:
    posted: int
    replayed: int


def ledger_account_get(*, user_id: int | None, kind: str, currency: str) -> Account:
    """Return the account of `user_id` (None: the platform) of this kind and currency, creating it once."""
    currency_decimals(currency)
    account, _ = Account.objects.get_or_create(owner_id=user_id, kind=kind, currency=currency)
    return account


def ledger_accounts_ensure(*, user_id: int) -> list[Account]:
    """Create every account a user has (available, escrow, earnings in each currency) if missing."""
    return [
        ledger_account_get(user_id=user_id, kind=kind, currency=currency)
        for currency in DECIMALS
        for kind in USER_KINDS
    ]


def _user_account_id(user_id: int, kind: str, currency: str) -> int:
    return ledger_account_get(user_id=user_id, kind=kind, currency=currency).pk


def _platform_account_id(kind: str, currency: str) -> int:
    return ledger_account_get(user_id=None, kind=kind, currency=currency).pk


def _positive(amount: int) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InvalidAmount(f"Amounts are positive integers of base units, got {amount!r}.")
    return amount


def _transfer_posting(
    *, kind: str, currency: str, source: int, target: int, amount: int, idempotency_key: str, memo: str, metadata
) -> Posting:
    _positive(amount)
    return Posting(
        kind=kind,
        currency=currency,
        idempotency_key=idempotency_key,
        legs=(Leg(source, -amount), Leg(target, amount)),
        memo=memo,
        metadata=metadata or {},
    )


def ledger_deposit(
    *,
    user_id: int,
    currency: str,
    amount: int,
    idempotency_key: str,
    kind: str = TransactionKind.DEPOSIT,
    memo: str = "",
    metadata: dict | None = None,
) -> PostResult:
    """Credit a user's available balance from the platform's chain-clearing account."""
    return ledger_post(
        _transfer_posting(
            kind=kind,
            currency=currency,
            source=_platform_account_id(AccountKind.CHAIN_CLEARING, currency),
            target=_user_account_id(user_id, AccountKind.AVAILABLE, currency),
            amount=amount,
            idempotency_key=idempotency_key,
            memo=memo or "Deposit",
            metadata=metadata,
        )
    )


def ledger_hold(
    *, user_id: int, currency: str, amount: int, idempotency_key: str, memo: str = "", metadata: dict | None = None
) -> PostResult:
    """Move funds from a user's available balance into escrow."""
    return ledger_post(
        _transfer_posting(
            kind=TransactionKind.HOLD,
            currency=currency,
            source=_user_account_id(user_id, AccountKind.AVAILABLE, currency),
            target=_user_account_id(user_id, AccountKind.ESCROW, currency),
            amount=amount,
            idempotency_key=idempotency_key,
            memo=memo or "Escrow hold",
            metadata=metadata,
        )
    )


def ledger_release(
    *, user_id: int, currency: str, amount: int, idempotency_key: str, memo: str = "", metadata: dict | None = None
) -> PostResult:
    """Return funds from a user's escrow to their available balance."""
    return ledger_post(
        _transfer_posting(
            kind=TransactionKind.RELEASE,
            currency=currency,
            source=_user_account_id(user_id, AccountKind.ESCROW, currency),
            target=_user_account_id(user_id, AccountKind.AVAILABLE, currency),
            amount=amount,
            idempotency_key=idempotency_key,
            memo=memo or "Escrow release",
            metadata=metadata,
        )
    )


def ledger_transfer(
    *,
    from_user_id: int,
    to_user_id: int,
    currency: str,
    amount: int,
    idempotency_key: str,
    memo: str = "",
    metadata: dict | None = None,
) -> PostResult:
    """Move funds between two users' available balances."""
    return ledger_post(
        _transfer_posting(
            kind=TransactionKind.TRANSFER,
            currency=currency,
            source=_user_account_id(from_user_id, AccountKind.AVAILABLE, currency),
            target=_user_account_id(to_user_id, AccountKind.AVAILABLE, currency),
            amount=amount,
            idempotency_key=idempotency_key,
            memo=memo or "Transfer",
            metadata=metadata,
        )
    )


def platform_fee(amount: int, fee_bps: int | None = None) -> int:
    """Return the platform fee on a buyer charge, rounded down to a whole base unit."""
    bps = settings.JANCTION_PLATFORM_FEE_BPS if fee_bps is None else fee_bps
    return amount * bps // 10_000


def charge_posting(
    *,
    buyer_id: int,
    provider_id: int,
    currency: str,
    buyer_amount: int,
    idempotency_key: str,
    provider_amount: int | None = None,
    fee_bps: int | None = None,
    memo: str = "",
    metadata: dict | None = None,
) -> Posting:
    """Build a charge: buyer escrow pays the provider's earnings, the platform fee and the market residual.

    `provider_amount` defaults to the buyer amount less the fee. Whatever is left between what the buyer pays
    and what the provider and the fee take goes to (or, when negative, comes from) the platform market account.
    """
    _positive(buyer_amount)
    fee = platform_fee(buyer_amount, fee_bps)
    if provider_amount is None:
        provider_amount = buyer_amount - fee
    if isinstance(provider_amount, bool) or not isinstance(provider_amount, int) or provider_amount < 0:
        raise InvalidAmount(f"The provider amount must be a non-negative integer, got {provider_amount!r}.")
    residual = buyer_amount - fee - provider_amount
    legs = [Leg(_user_account_id(buyer_id, AccountKind.ESCROW, currency), -buyer_amount)]
    if provider_amount:
        legs.append(Leg(_user_account_id(provider_id, AccountKind.EARNINGS, currency), provider_amount))
    if fee:
        legs.append(Leg(_platform_account_id(AccountKind.FEES, currency), fee))
    if residual:
        legs.append(Leg(_platform_account_id(AccountKind.MARKET, currency), residual))
    return Posting(
        kind=TransactionKind.CHARGE,
        currency=currency,
        idempotency_key=idempotency_key,
        legs=tuple(legs),
        memo=memo or "Usage charge",
        metadata=metadata or {},
    )


def ledger_charge(**kwargs) -> PostResult:
    """Charge a buyer's escrow for a provider's service in one transaction (see `charge_posting`)."""
    return ledger_post(charge_posting(**kwargs))


def ledger_post(posting: Posting) -> PostResult:
    """Post one balanced transaction exactly once per idempotency key."""
    _validate(posting)
    fingerprint = posting.fingerprint()
    try:
        with transaction.atomic():
            # Inserting first makes a concurrent duplicate wait on the unique index instead of double-posting.
            txn = Transaction.objects.create(
                kind=posting.kind,
                idempotency_key=posting.idempotency_key,
                fingerprint=fingerprint,
                memo=posting.memo[:200],
                metadata=posting.metadata,
            )
            _apply([posting], [txn])
    except IntegrityError:
        existing = Transaction.objects.filter(idempotency_key=posting.idempotency_key).first()
        if existing is None:
            raise
        if existing.fingerprint != fingerprint:
            raise IdempotencyKeyReused(
                f"Idempotency key {posting.idempotency_key!r} was already used for a different transaction."
            ) from None
        return PostResult(transaction=existing, created=False)
    return PostResult(transaction=txn, created=True)


def ledger_post_bulk(postings: Sequence[Posting]) -> BulkResult:
    """Post many transactions in one database transaction; already-posted keys are skipped.

    This is the metering path: thousands of charges a minute cost a handful of queries per batch.
    All postings land or none does (an insufficient balance anywhere aborts the batch).
    """
    if not postings:
        return BulkResult(posted=0, replayed=0)
    keys = [p.idempotency_key for p in postings]
    if len(set(keys)) != len(keys):
        raise InvalidAmount("A bulk posting repeats an idempotency key; each posting needs its own key.")
    for posting in postings:
        _validate(posting)
    fingerprints = {p.idempotency_key: p.fingerprint() for p in postings}
    for attempt in range(_BULK_ATTEMPTS):
        try:
            with transaction.atomic():
                existing = dict(
                    Transaction.objects.filter(idempotency_key__in=keys).values_list("idempotency_key", "fingerprint")
                )
                for key, fingerprint in existing.items():
                    if fingerprint != fingerprints[key]:
                        raise IdempotencyKeyReused(f"Idempotency key {key!r} was already used for a different posting.")
                # Sorted keys make concurrent bulk writers take the unique-index locks in one order (no deadlock).
                fresh = sorted(
                    (p for p in postings if p.idempotency_key not in existing), key=lambda p: p.idempotency_key
                )
                txns = Transaction.objects.bulk_create(
                    [
                        Transaction(
                            kind=p.kind,
                            idempotency_key=p.idempotency_key,
                            fingerprint=fingerprints[p.idempotency_key],
                            memo=p.memo[:200],
                            metadata=p.metadata,
                        )
                        for p in fresh
                    ]
                )
                _apply(fresh, txns)
                return BulkResult(posted=len(fresh), replayed=len(existing))
        except IntegrityError:
            # Another writer posted one of these keys between our look-up and insert: look again.
            if attempt == _BULK_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _validate(posting: Posting) -> None:
    currency_decimals(posting.currency)
    if not posting.idempotency_key or len(posting.idempotency_key) > 200:
        raise InvalidAmount("Every posting needs an idempotency key of 1 to 200 characters.")
    if len(posting.legs) < 2:
        raise UnbalancedTransaction("A transaction needs at least two legs.")
    if any(isinstance(leg.amount, bool) or not isinstance(leg.amount, int) or leg.amount == 0 for leg in posting.legs):
        raise InvalidAmount("Every leg moves a non-zero integer number of base units.")
    if sum(leg.amount for leg in posting.legs) != 0:
        raise UnbalancedTransaction(f"Legs of {posting.idempotency_key!r} do not sum to zero.")


def _apply(postings: Iterable[Posting], txns: Sequence[Transaction]) -> None:
    """Lock every touched account in primary-key order, check balances, write balances and entries."""
    postings = list(postings)
    if not postings:
        return
    deltas: dict[int, int] = defaultdict(int)
    for posting in postings:
        for leg in posting.legs:
            deltas[leg.account_id] += leg.amount
    locked = {
        account.pk: account
        for account in Account.objects.select_for_update()
        .filter(pk__in=deltas)
        .order_by("pk")
        .only("pk", "owner_id", "kind", "currency", "balance")
    }
    missing = set(deltas) - set(locked)
    if missing:
        raise InvalidAmount(f"Unknown ledger account ids: {sorted(missing)}.")
    for posting in postings:
        for leg in posting.legs:
            if locked[leg.account_id].currency != posting.currency:
                raise InvalidAmount(f"Account {leg.account_id} does not hold {posting.currency}.")
    changed = []
    for account_id, delta in deltas.items():
        if delta == 0:
            continue
        account = locked[account_id]
        new_balance = int(account.balance) + delta
        if account.owner_id is not None and new_balance < 0:
            raise InsufficientFunds(
                f"Not enough {account.currency} in your {account.kind} balance: it holds "
                f"{from_base_units(int(account.balance), account.currency)}, "
                f"this needs {from_base_units(-delta, account.currency)}.",
                detail={"account": account.pk, "currency": account.currency},
            )
        account.balance = new_balance
        changed.append(account)
    Account.objects.bulk_update(changed, ["balance"])
    now = timezone.now()
    Entry.objects.bulk_create(
        [
            Entry(
                transaction=txn, account_id=leg.account_id, currency=posting.currency, amount=leg.amount, created_at=now
            )
            for posting, txn in zip(postings, txns, strict=True)
            for leg in posting.legs
        ]
    )
