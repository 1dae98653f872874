"""Ledger throughput on PostgreSQL: single transfers/s (1 and 4 threads) and bulk-path entries/s.

Run: make bench  (or DATABASE_URL=postgres://... .venv/bin/python -m benchmarks.ledger_bench)
Prints the median of several repetitions of each figure.
"""

import statistics
import threading
import time

from benchmarks._django import setup_bench_database

REPEATS = 5
TRANSFERS_PER_THREAD = 300
BULK_CHARGES = 2_000  # 3 entries each: buyer escrow, provider earnings, platform fee


def main() -> None:
    teardown = setup_bench_database()
    try:
        run()
    finally:
        teardown()


def run() -> None:
    from django.db import connections

    from ledger.models import Entry
    from ledger.services import charge_posting, ledger_deposit, ledger_hold, ledger_post_bulk, ledger_transfer
    from tests.factories import UserFactory

    users = [UserFactory() for _ in range(16)]
    for user in users:
        ledger_deposit(user_id=user.pk, currency="USDC", amount=10**15, idempotency_key=f"seed-{user.pk}")
    sequence = iter(range(10**9))

    def transfers(thread_users, count):
        try:
            a, b = thread_users
            for _ in range(count):
                ledger_transfer(
                    from_user_id=a.pk, to_user_id=b.pk, currency="USDC", amount=1, idempotency_key=f"t-{next(sequence)}"
                )
                a, b = b, a
        finally:
            connections.close_all()

    def single_rate(threads: int) -> float:
        pairs = [(users[2 * i], users[2 * i + 1]) for i in range(threads)]
        workers = [threading.Thread(target=transfers, args=(pair, TRANSFERS_PER_THREAD)) for pair in pairs]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return threads * TRANSFERS_PER_THREAD / (time.perf_counter() - start)

    buyer, provider = users[-2], users[-1]
    ledger_hold(user_id=buyer.pk, currency="USDC", amount=10**14, idempotency_key="bench-hold")

    def bulk_rate() -> float:
        postings = [
            charge_posting(
                buyer_id=buyer.pk,
                provider_id=provider.pk,
                currency="USDC",
                buyer_amount=1_000 + i,
                idempotency_key=f"bulk-{next(sequence)}",
            )
            for i in range(BULK_CHARGES)
        ]
        before = Entry.objects.count()
        start = time.perf_counter()
        ledger_post_bulk(postings)
        elapsed = time.perf_counter() - start
        return (Entry.objects.count() - before) / elapsed

    single_rate(1)  # warm-up: connections, account rows, query plans
    one = [single_rate(1) for _ in range(REPEATS)]
    four = [single_rate(4) for _ in range(REPEATS)]
    bulk = [bulk_rate() for _ in range(REPEATS)]
    print(f"single transfers/s, 1 thread : median {statistics.median(one):8.0f}  (runs: {_fmt(one)})")
    print(f"single transfers/s, 4 threads: median {statistics.median(four):8.0f}  (runs: {_fmt(four)})")
    print(f"bulk entries/s ({BULK_CHARGES} charges/batch): median {statistics.median(bulk):8.0f}  (runs: {_fmt(bulk)})")
    print("goals: >= 500 single transfers/s, >= 20,000 bulk entries/s")


def _fmt(values) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


if __name__ == "__main__":
    main()
