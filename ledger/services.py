"""Ledger writes: every balance change is a balanced transaction posted under row locks."""

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from ledger.currencies import DECIMALS, currency_decimals, from_base_units
from ledger.errors import IdempotencyKeyReused, InsufficientFunds, InvalidAmount, UnbalancedTransaction
from ledger.models import (
    BASIC_USER_KINDS,
    PLATFORM_KINDS,
    Account,
    AccountKind,
    Entry,
    Transaction,
    TransactionKind,
)


@dataclass(frozen=True)
class Leg:
    """One side of a posting: an account named by its owner (None: the platform) and kind, and a signed amount."""

    owner_id: int | None
    kind: str
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
        legs = sorted((leg.owner_id or 0, leg.kind, leg.amount) for leg in self.legs)
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
        for kind in BASIC_USER_KINDS
    ]


def _positive(amount: int) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InvalidAmount(f"Amounts are positive integers of base units, got {amount!r}.")
    return amount


def _transfer_posting(
    *,
    kind: str,
    currency: str,
    source: tuple[int | None, str],
    target: tuple[int | None, str],
    amount: int,
    idempotency_key: str,
    memo: str,
    metadata,
) -> Posting:
    _positive(amount)
    return Posting(
        kind=kind,
        currency=currency,
        idempotency_key=idempotency_key,
        legs=(Leg(*source, -amount), Leg(*target, amount)),
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
            source=(None, AccountKind.CHAIN_CLEARING),
            target=(user_id, AccountKind.AVAILABLE),
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
            source=(user_id, AccountKind.AVAILABLE),
            target=(user_id, AccountKind.ESCROW),
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
            source=(user_id, AccountKind.ESCROW),
            target=(user_id, AccountKind.AVAILABLE),
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
            source=(from_user_id, AccountKind.AVAILABLE),
            target=(to_user_id, AccountKind.AVAILABLE),
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
    legs = [Leg(buyer_id, AccountKind.ESCROW, -buyer_amount)]
    if provider_amount:
        legs.append(Leg(provider_id, AccountKind.EARNINGS, provider_amount))
    if fee:
        legs.append(Leg(None, AccountKind.FEES, fee))
    if residual:
        legs.append(Leg(None, AccountKind.MARKET, residual))
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
    posted, replayed = _post_many([posting])
    if replayed:
        return PostResult(transaction=replayed[0], created=False)
    return PostResult(transaction=posted[0], created=True)


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
    posted, replayed = _post_many(postings)
    return BulkResult(posted=len(posted), replayed=len(replayed))


def _post_many(postings: Sequence[Posting]) -> tuple[list[Transaction], list[Transaction]]:
    """Insert the transactions whose keys are new, apply them, and return (posted, replayed)."""
    for posting in postings:
        _validate(posting)
    fingerprints = {p.idempotency_key: p.fingerprint() for p in postings}
    # Sorted keys make concurrent writers take the unique-index locks in one order (no deadlock).
    ordered = sorted(postings, key=lambda p: p.idempotency_key)
    with transaction.atomic():
        # A key being inserted by a concurrent, uncommitted transaction makes this insert wait for it,
        # then skip the row if that transaction committed: a duplicate can never post twice.
        posted = _insert_transactions(ordered, fingerprints)
        replayed = [p.idempotency_key for p in ordered if p.idempotency_key not in posted]
        existing = list(Transaction.objects.filter(idempotency_key__in=replayed)) if replayed else []
        for txn in existing:
            if txn.fingerprint != fingerprints[txn.idempotency_key]:
                raise IdempotencyKeyReused(
                    f"Idempotency key {txn.idempotency_key!r} was already used for a different transaction."
                )
        fresh = [p for p in ordered if p.idempotency_key in posted]
        _apply(fresh, [posted[p.idempotency_key] for p in fresh])
    return list(posted.values()), existing


def _insert_transactions(postings: Sequence[Posting], fingerprints: dict[str, str]) -> dict[str, Transaction]:
    """Insert transaction rows, skipping keys that already exist; return the inserted rows by key."""
    if not postings:
        return {}
    now = timezone.now()
    table = Transaction._meta.db_table
    row = "(%s, %s, %s, %s, %s, %s)"
    params = []
    for p in postings:
        params += [
            p.kind,
            p.idempotency_key,
            fingerprints[p.idempotency_key],
            p.memo[:200],
            json.dumps(p.metadata),
            now,
        ]
    inserted = {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (kind, idempotency_key, fingerprint, memo, metadata, created_at) "  # noqa: S608
            f"VALUES {', '.join([row] * len(postings))} "
            "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, idempotency_key",
            params,
        )
        by_key = {p.idempotency_key: p for p in postings}
        for pk, key in cursor.fetchall():
            p = by_key[key]
            txn = Transaction(
                id=pk,
                kind=p.kind,
                idempotency_key=key,
                fingerprint=fingerprints[key],
                memo=p.memo[:200],
                metadata=p.metadata,
                created_at=now,
            )
            txn._state.adding = False
            txn._state.db = connection.alias
            inserted[key] = txn
    return inserted


def _validate(posting: Posting) -> None:
    currency_decimals(posting.currency)
    for leg in posting.legs:
        _check_kind(leg.owner_id, leg.kind)
    if not posting.idempotency_key or len(posting.idempotency_key) > 200:
        raise InvalidAmount("Every posting needs an idempotency key of 1 to 200 characters.")
    if len(posting.legs) < 2:
        raise UnbalancedTransaction("A transaction needs at least two legs.")
    if any(isinstance(leg.amount, bool) or not isinstance(leg.amount, int) or leg.amount == 0 for leg in posting.legs):
        raise InvalidAmount("Every leg moves a non-zero integer number of base units.")
    if sum(leg.amount for leg in posting.legs) != 0:
        raise UnbalancedTransaction(f"Legs of {posting.idempotency_key!r} do not sum to zero.")


AccountRef = tuple[int | None, str, str]  # (owner id or None for the platform, kind, currency)


@dataclass(slots=True)
class _LockedAccount:
    pk: int
    owner_id: int | None
    kind: str
    currency: str
    balance: int


def _apply(postings: Sequence[Posting], txns: Sequence[Transaction]) -> None:
    """Lock every touched account in primary-key order, check balances, write balances and entries."""
    if not postings:
        return
    deltas: dict[AccountRef, int] = defaultdict(int)
    for posting in postings:
        for leg in posting.legs:
            deltas[(leg.owner_id, leg.kind, posting.currency)] += leg.amount
    locked = _lock_accounts(set(deltas))
    changed = []
    for ref, delta in deltas.items():
        account = locked[ref]
        new_balance = account.balance + delta
        if account.owner_id is not None and new_balance < 0:
            raise InsufficientFunds(
                f"Not enough {account.currency} in your {account.kind} balance: it holds "
                f"{from_base_units(account.balance, account.currency)}, "
                f"this needs {from_base_units(-delta, account.currency)}.",
                detail={"account": account.pk, "currency": account.currency},
            )
        if delta:
            account.balance = new_balance
            changed.append(account)
    now = timezone.now()
    entries = [
        (txn.pk, locked[(leg.owner_id, leg.kind, posting.currency)].pk, posting.currency, leg.amount, now)
        for posting, txn in zip(postings, txns, strict=True)
        for leg in posting.legs
    ]
    _write(changed, entries)


# Above this many entries PostgreSQL's COPY beats a multi-row INSERT.
_COPY_THRESHOLD = 200


def _db_int(value: int):
    """Return an integer as BaseUnitsField stores it on this database (text on SQLite)."""
    return value if connection.vendor == "postgresql" else str(value)


def _write(accounts: list[_LockedAccount], entries: list[tuple[int, int, str, int, object]]) -> None:
    """Write new balances (rows already locked) and entry rows (transaction, account, currency, amount, time).

    On PostgreSQL a small posting is one statement: the balance UPDATE rides along the entry INSERT as a
    data-modifying CTE, saving a round trip on the hot single-transfer path.
    """
    account_table, entry_table = Account._meta.db_table, Entry._meta.db_table
    entry_columns = "(transaction_id, account_id, currency, amount, created_at)"
    entry_values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(entries))
    entry_params = [value for row in entries for value in row]
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            cursor.executemany(
                f"UPDATE {account_table} SET balance = %s WHERE id = %s",  # noqa: S608 - only placeholders
                [(str(a.balance), a.pk) for a in accounts],
            )
            cursor.execute(
                f"INSERT INTO {entry_table} {entry_columns} VALUES {entry_values}",  # noqa: S608
                [_db_int(v) if i % 5 == 3 else v for i, v in enumerate(entry_params)],
            )
            return
        balances = ", ".join(["(%s::bigint, %s::numeric)"] * len(accounts))
        balance_params = [value for a in accounts for value in (a.pk, a.balance)]
        update = (
            f"UPDATE {account_table} AS a SET balance = v.balance "  # noqa: S608 - only placeholders
            f"FROM (VALUES {balances}) AS v(id, balance) WHERE a.id = v.id"
        )
        if len(entries) >= _COPY_THRESHOLD:
            cursor.execute(update, balance_params)
            with cursor.cursor.copy(f"COPY {entry_table} {entry_columns} FROM STDIN") as copy:
                for row in entries:
                    copy.write_row(row)
            return
        cursor.execute(
            f"WITH moved AS ({update} RETURNING a.id) "  # noqa: S608 - only placeholders
            f"INSERT INTO {entry_table} {entry_columns} VALUES {entry_values}",
            balance_params + entry_params,
        )


def _lock_accounts(refs: set[AccountRef]) -> dict[AccountRef, _LockedAccount]:
    """Select the accounts for `refs` FOR UPDATE in primary-key order, creating missing ones first."""
    for attempt in range(2):
        groups: dict[tuple[str, str], list[int | None]] = defaultdict(list)
        for owner_id, kind, currency in refs:
            groups[(kind, currency)].append(owner_id)
        conditions, params = [], []
        for (kind, currency), owners in groups.items():
            users = [owner for owner in owners if owner is not None]
            if users:
                conditions.append(f"(kind = %s AND currency = %s AND owner_id IN ({', '.join(['%s'] * len(users))}))")
                params += [kind, currency, *users]
            if None in owners:
                conditions.append("(kind = %s AND currency = %s AND owner_id IS NULL)")
                params += [kind, currency]
        lock = " FOR UPDATE" if connection.vendor == "postgresql" else ""
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, owner_id, kind, currency, balance FROM {Account._meta.db_table} "  # noqa: S608
                f"WHERE {' OR '.join(conditions)} ORDER BY id{lock}",
                params,
            )
            locked = {
                (owner_id, kind, currency): _LockedAccount(pk, owner_id, kind, currency, int(balance))
                for pk, owner_id, kind, currency, balance in cursor.fetchall()
            }
        missing = refs - set(locked)
        if not missing:
            return locked
        if attempt:
            raise InvalidAmount(f"No ledger accounts for {sorted(missing, key=str)}.")
        for owner_id, kind, currency in missing:
            _check_kind(owner_id, kind)
            ledger_account_get(user_id=owner_id, kind=kind, currency=currency)
    raise AssertionError("unreachable")


def _check_kind(owner_id: int | None, kind: str) -> None:
    if (owner_id is None) != (kind in PLATFORM_KINDS):
        whose = "the platform" if owner_id is None else "a user"
        raise InvalidAmount(f"{whose} has no '{kind}' account.")
