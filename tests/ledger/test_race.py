"""Ledger under real concurrency on PostgreSQL: threads racing transfers, holds, charges and replays."""

import random
import threading

import pytest
from django.db import connections
from django.db.models import Count, Sum

from ledger.errors import InsufficientFunds
from ledger.models import Account, AccountKind, Entry, Transaction
from ledger.services import (
    ledger_accounts_ensure,
    ledger_charge,
    ledger_deposit,
    ledger_hold,
    ledger_release,
    ledger_transfer,
)
from tests.factories import UserFactory

THREADS = 8
OPERATIONS = 2_400  # distinct operations; threads replay overlapping shares of them
USERS = 10  # x (available, escrow, earnings) = 30 user accounts, plus the platform's
USDC = "USDC"


def _operations(rng, user_ids):
    ops = []
    for i in range(OPERATIONS):
        a, b = rng.sample(user_ids, 2)
        amount = rng.randint(1, 5_000_000)
        kind = rng.choice(["transfer", "hold", "release", "charge"])
        ops.append((kind, f"race-{i}", a, b, amount))
    return ops


def _run(op):
    kind, key, a, b, amount = op
    if kind == "transfer":
        ledger_transfer(from_user_id=a, to_user_id=b, currency=USDC, amount=amount, idempotency_key=key)
    elif kind == "hold":
        ledger_hold(user_id=a, currency=USDC, amount=amount, idempotency_key=key)
    elif kind == "release":
        ledger_release(user_id=a, currency=USDC, amount=amount, idempotency_key=key)
    else:
        ledger_charge(buyer_id=a, provider_id=b, currency=USDC, buyer_amount=amount, idempotency_key=key)


@pytest.mark.usefixtures("requires_postgresql")
@pytest.mark.django_db(transaction=True)
def test_concurrent_postings_keep_the_books_exact():
    rng = random.Random(20261125)
    users = [UserFactory() for _ in range(USERS)]
    user_ids = [u.pk for u in users]
    total_deposits = 0
    for user in users:
        ledger_accounts_ensure(user_id=user.pk)
        amount = rng.randint(50_000_000, 200_000_000)
        ledger_deposit(user_id=user.pk, currency=USDC, amount=amount, idempotency_key=f"seed-{user.pk}")
        total_deposits += amount

    ops = _operations(rng, user_ids)
    # Every operation runs in two threads at once (a duplicate delivery), in each thread's own order.
    shares = [[] for _ in range(THREADS)]
    for op in ops:
        for t in rng.sample(range(THREADS), 2):
            shares[t].append(op)
    for share in shares:
        rng.shuffle(share)

    outcomes = {"posted": 0, "replayed": 0, "refused": 0}
    errors = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def worker(share):
        try:
            barrier.wait()
            for op in share:
                try:
                    _run(op)
                    with lock:
                        outcomes["posted"] += 1
                except InsufficientFunds:
                    with lock:
                        outcomes["refused"] += 1
        except Exception as exc:  # any other failure is a bug the assertions below report
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert outcomes["posted"] + outcomes["refused"] == 2 * OPERATIONS
    assert outcomes["posted"] > OPERATIONS  # most of the workload succeeds, some is refused
    assert outcomes["refused"] > 0

    # No idempotency key produced two transactions, and each operation posted at most once.
    race_txns = Transaction.objects.filter(idempotency_key__startswith="race-")
    assert race_txns.values("idempotency_key").annotate(n=Count("id")).filter(n__gt=1).count() == 0
    assert race_txns.count() <= OPERATIONS
    # Every transaction sums to zero.
    unbalanced = Entry.objects.values("transaction_id").annotate(total=Sum("amount")).exclude(total=0)
    assert list(unbalanced) == []
    # No user balance is negative, and money is conserved: users + platform earnings == deposits.
    assert not Account.objects.filter(owner__isnull=False, balance__lt=0).exists()
    held_by_users = int(Account.objects.filter(owner__isnull=False).aggregate(s=Sum("balance"))["s"])
    fees = int(Account.objects.filter(kind=AccountKind.FEES).aggregate(s=Sum("balance"))["s"] or 0)
    assert held_by_users + fees == total_deposits
    assert int(Account.objects.aggregate(s=Sum("balance"))["s"]) == 0
    # Balances equal the sum of their entries.
    for account in Account.objects.all():
        from_entries = account.entries.aggregate(s=Sum("amount"))["s"] or 0
        assert int(account.balance) == int(from_entries)
