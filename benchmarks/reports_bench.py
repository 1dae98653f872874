"""Report reads on PostgreSQL: the system report's utilisation against a plain SQL sum of the same usage.

Run: DATABASE_URL=postgres://... .venv/bin/python -m benchmarks.reports_bench [--reports 100] [--trials 5]

Set-up (metering_bench's): 1,000 running rental placements on 10 providers' nodes, each with `--reports` metered
usage reports of 10 s this month (100 each = 100,000 reports, about 17 minutes of use per placement).
Timed, median of `--trials`:
  baseline     one SQL aggregate: the sum of the reports' vgpu_milliseconds (no clipping, no days);
  sold         report_selectors.sold_vgpu_ms: every placement's reports replayed with metering's clipping;
  pools        report_selectors.pool_reports: online time per node plus sold, per pool and day;
  provider     report_selectors.provider_utilisation for one provider (100 placements);
  page         GET /reports/system/ as an operator (every query and the template).
The ratio column is each median over the baseline's.
"""

import argparse
import statistics
import time

from benchmarks._django import setup_bench_database

REPORT_SECONDS = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=100, help="metered usage reports per placement")
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    teardown = setup_bench_database("janction_reports_bench")
    try:
        run(args.reports, args.trials)
    finally:
        teardown()


def _median(trials: int, call) -> float:
    times = []
    for _ in range(trials):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(reports: int, trials: int) -> None:
    from django.db.models import Sum
    from django.test import Client
    from django.utils import timezone

    from benchmarks.metering_bench import _setup
    from marketplace.periods import current_month
    from marketplace.rentals.models import RentalPlacement
    from marketplace.report_selectors import pool_reports, provider_utilisation, sold_vgpu_ms
    from nodes.models import UsageReport
    from tests.factories import UserFactory

    node_placements = _setup()
    month = current_month()
    start_ms = int(month.start.timestamp() * 1000)
    rows = [
        UsageReport(
            placement=placement,
            seq=seq,
            interval_start_ms=start_ms + (seq - 1) * REPORT_SECONDS * 1000,
            interval_end_ms=start_ms + seq * REPORT_SECONDS * 1000,
            vgpu_count=1,
            vgpu_milliseconds=REPORT_SECONDS * 1000,
            signature=b"bench",
        )
        for placement in node_placements
        for seq in range(1, reports + 1)
    ]
    UsageReport.objects.bulk_create(rows, batch_size=5_000)
    RentalPlacement.objects.update(metered_through_seq=reports, metered_vgpu_ms=reports * REPORT_SECONDS * 1000)
    end = min(month.end, timezone.now())
    usage = sold_vgpu_ms(start=month.start, end=month.end)
    replayed = sum(sum(u.per_day.values()) for u in usage)
    summed = UsageReport.objects.aggregate(s=Sum("vgpu_milliseconds"))["s"]
    assert replayed == summed, (replayed, summed)  # no clipping applies here: both read the same usage
    provider_id = RentalPlacement.objects.values_list("provider_id", flat=True).first()
    operator = UserFactory(is_staff=True)
    client = Client()
    client.force_login(operator)
    assert client.get("/reports/system/").status_code == 200

    timings = {
        "baseline": _median(
            trials,
            lambda: UsageReport.objects.filter(
                interval_end_ms__gt=start_ms, interval_start_ms__lt=int(end.timestamp() * 1000)
            ).aggregate(s=Sum("vgpu_milliseconds")),
        ),
        "sold": _median(trials, lambda: sold_vgpu_ms(start=month.start, end=month.end)),
        "pools": _median(trials, lambda: pool_reports(month=month)),
        "provider": _median(trials, lambda: provider_utilisation(owner_id=provider_id, month=month)),
        "page": _median(trials, lambda: client.get("/reports/system/")),
    }
    print(f"{len(node_placements)} placements, {len(rows)} usage reports, median of {trials}")
    base = timings["baseline"]
    for name, seconds in timings.items():
        print(f"{name:10s} {seconds * 1000:10.1f} ms   x{seconds / base:8.1f}")


if __name__ == "__main__":
    main()
