"""Metering throughput on PostgreSQL: 1,000 running placements each reporting usage every 10 s.

Run: DATABASE_URL=postgres://... .venv/bin/python -m benchmarks.metering_bench
Prints reports/s charged through the bulk ledger path (a 5-report backlog per placement) and, for a
steady stream where each placement reports every 10 s at its own phase while `metering_run` runs every
RENTALS_METERING_INTERVAL_SECONDS, the lag between a report's arrival and the commit of its charge.
"""

import statistics
import threading
import time

from benchmarks._django import setup_bench_database

PLACEMENTS = 1_000
PROVIDERS = 10
BUYERS = 100
BACKLOG_REPORTS = 5  # per placement
STREAM_SECONDS = 40
REPORT_EVERY_SECONDS = 10


def main() -> None:
    teardown = setup_bench_database("janction_metering_bench")
    try:
        run()
    finally:
        teardown()


def _setup():
    from django.utils import timezone

    from ledger.services import Leg, Posting, ledger_deposit, ledger_post_bulk
    from marketplace.rentals.models import Rental, RentalPlacement, RentalState
    from nodes.models import NodePlacement
    from pricing.models import Bid, BidState
    from tests.factories import UserFactory, online_node

    providers = [UserFactory() for _ in range(PROVIDERS)]
    nodes = [
        online_node(p, name=f"rig-{i}", vgpus=PLACEMENTS // PROVIDERS, price=300_000) for i, p in enumerate(providers)
    ]
    buyers = [UserFactory() for _ in range(BUYERS)]
    for buyer in buyers:
        ledger_deposit(user_id=buyer.pk, currency="USDC", amount=10**12, idempotency_key=f"seed-{buyer.pk}")
    pool = nodes[0].vgpus.first().pool
    now = timezone.now()
    hold = 2_000_000 * 24  # 2 USDC per vGPU-hour for 24 h
    rentals = Rental.objects.bulk_create(
        Rental(
            owner=buyers[i % BUYERS],
            pool=pool,
            vgpus=1,
            max_price_per_hour=2_000_000,
            max_duration_seconds=24 * 3600,
            image="docker.io/library/busybox:1.36",
            match_deadline=now,
            state=RentalState.RUNNING,
            started_at=now,
            held_total=hold,
            escrow_held=hold,
        )
        for i in range(PLACEMENTS)
    )
    bids = Bid.objects.bulk_create(
        Bid(
            owner_id=r.owner_id,
            pool=pool,
            units=1,
            max_price_per_hour=2_000_000,
            reference=f"rental:{r.pk}:1",
            deadline=now,
            state=BidState.WON,
            payment_per_hour=500_000,
        )
        for r in rentals
    )
    ledger_post_bulk(
        [
            Posting(
                kind="hold",
                currency="USDC",
                idempotency_key=f"rental:{r.pk}:hold:1",
                legs=(Leg(r.owner_id, "escrow", hold), Leg(r.owner_id, "available", -hold)),
            )
            for r in rentals
        ]
    )
    node_placements = NodePlacement.objects.bulk_create(
        NodePlacement(node=nodes[i % PROVIDERS], placement_id=f"p-{r.pk}", state="running", vgpu_local_ids=["0:0"])
        for i, r in enumerate(rentals)
    )
    RentalPlacement.objects.bulk_create(
        RentalPlacement(
            rental=r,
            bid=b,
            node=nodes[i % PROVIDERS],
            provider=providers[i % PROVIDERS],
            placement_id=f"p-{r.pk}",
            node_placement=np,
            vgpu_local_ids=["0:0"],
            vgpu_count=1,
            buyer_payment_per_hour=500_000,
            bid_units=1,
            provider_payment_per_hour=3 * 410_000,
            provider_units=3,
            limit_ms=24 * 3600 * 1000,
            observed_state="running",
            dispatched_at=now,
        )
        for i, (r, b, np) in enumerate(zip(rentals, bids, node_placements, strict=True))
    )
    return node_placements


def _reports(node_placements, seq: int, start_ms: int):
    from nodes.models import UsageReport

    return [
        UsageReport(
            placement=np,
            seq=seq,
            interval_start_ms=start_ms,
            interval_end_ms=start_ms + REPORT_EVERY_SECONDS * 1000,
            vgpu_count=1,
            vgpu_milliseconds=REPORT_EVERY_SECONDS * 1000,
            signature=b"bench",
        )
        for np in node_placements
    ]


def run() -> None:
    from django.conf import settings
    from django.db import connections

    from ledger.models import Entry
    from marketplace.rentals.metering import metering_run
    from nodes.models import UsageReport

    node_placements = _setup()
    t0_ms = 1_700_000_000_000

    # 1. Throughput: a backlog of 5 reports per placement, charged by back-to-back runs.
    for seq in range(1, BACKLOG_REPORTS + 1):
        UsageReport.objects.bulk_create(_reports(node_placements, seq, t0_ms + (seq - 1) * 10_000))
    start = time.perf_counter()
    charged = 0
    while True:
        result = metering_run()
        if not result.reports:
            break
        charged += result.reports
    elapsed = time.perf_counter() - start
    print(f"backlog: {charged} reports charged in {elapsed:.2f} s = {charged / elapsed:,.0f} reports/s (goal >= 1,000)")

    # 2. Steady stream: each placement reports every 10 s at its own phase; metering runs on its beat interval.
    interval = settings.RENTALS_METERING_INTERVAL_SECONDS
    stop = threading.Event()
    next_seq = dict.fromkeys((np.pk for np in node_placements), BACKLOG_REPORTS + 1)

    def produce() -> None:
        try:
            slices = 10
            per_slice = PLACEMENTS // slices
            tick = 0
            while not stop.is_set():
                chunk = node_placements[(tick % slices) * per_slice : (tick % slices + 1) * per_slice]
                rows = []
                for np in chunk:
                    seq = next_seq[np.pk]
                    next_seq[np.pk] += 1
                    rows += _reports([np], seq, t0_ms + (seq - 1) * 10_000)
                UsageReport.objects.bulk_create(rows)
                tick += 1
                stop.wait(REPORT_EVERY_SECONDS / slices)
        finally:
            connections.close_all()

    producer = threading.Thread(target=produce)
    lags: list[float] = []
    stream_reports = 0
    busy = 0.0
    producer.start()
    began = time.perf_counter()
    while time.perf_counter() - began < STREAM_SECONDS:
        call = time.perf_counter()
        result = metering_run()
        took = time.perf_counter() - call
        busy += took
        stream_reports += result.reports
        lags += [lag + took for lag in result.lags]  # arrival -> commit (an upper bound)
        time.sleep(max(interval - took, 0))
    stop.set()
    producer.join()
    lags.sort()
    p95 = lags[int(len(lags) * 0.95)] if lags else float("nan")
    print(
        f"stream: {stream_reports} reports in {STREAM_SECONDS} s from {PLACEMENTS} placements every "
        f"{REPORT_EVERY_SECONDS} s, metering every {interval} s; busy {busy:.2f} s "
        f"({stream_reports / busy if busy else 0:,.0f} reports/s while charging)"
    )
    print(f"lag arrival -> charge: median {statistics.median(lags):.2f} s, p95 {p95:.2f} s (goal < 15 s)")
    print(f"ledger entries written: {Entry.objects.count():,}")


if __name__ == "__main__":
    main()
