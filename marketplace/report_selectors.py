"""Reads behind the reports: monthly statement totals, provider earnings and utilisation, the operator's system report.

As in `marketplace.selectors`, each chart is drawn from one of these functions' results as they are, so a test can
compare a chart's data with the database aggregate it shows by calling the same function.

Utilisation is vGPU-hours sold over vGPU-hours online:
- **online**: the time a node was online or draining (its `NodeEvent` history, as reputation's uptime reads it)
  times the vGPUs it has now, split at UTC midnight;
- **sold**: the usage metering billed, replayed report by report with metering's clipping (a cancelled
  placement's `bill_until_ms`, the placement's `limit_ms`, at most the vGPUs allocated), split at UTC midnight.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from ledger.currencies import from_base_units
from ledger.models import AccountKind, Entry, SettlementAlert, SettlementBatch
from marketplace.periods import Month
from marketplace.rentals.models import RentalPlacement
from nodes.models import Node, NodeEvent, NodeState, Pool, UsageReport, VGpu
from pricing.models import Allocation, Bid, MarketRound
from reputation.models import Alert

UP_STATES = (NodeState.ONLINE, NodeState.DRAINING)
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
HOURS = Decimal("0.001")
PERCENT = Decimal("0.1")


# --- Monthly statement -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatementTotal:
    """One account's month: its balance before the month, what came in and went out, its balance after."""

    currency: str
    kind: str
    label: str
    opening: int
    money_in: int
    money_out: int  # zero or negative
    closing: int

    def shown(self) -> dict:
        """The amounts in whole currency units, exact, as the statement prints them."""
        return {
            name: from_base_units(getattr(self, name), self.currency)
            for name in ("opening", "money_in", "money_out", "closing")
        }


def statement_totals(*, user_id: int, month: Month, currency: str = "") -> list[StatementTotal]:
    """Return each of a user's accounts' opening balance, money in, money out and closing balance for a month."""
    entries = Entry.objects.filter(account__owner_id=user_id, created_at__lt=month.end)
    if currency:
        entries = entries.filter(currency=currency)
    rows = (
        entries.values("currency", "account__kind")
        .annotate(
            opening=Sum("amount", filter=Q(created_at__lt=month.start)),
            money_in=Sum("amount", filter=Q(created_at__gte=month.start, amount__gt=0)),
            money_out=Sum("amount", filter=Q(created_at__gte=month.start, amount__lt=0)),
        )
        .order_by("currency", "account__kind")
    )
    labels = dict(AccountKind.choices)
    totals = []
    for row in rows:
        opening, money_in, money_out = (int(row[name] or 0) for name in ("opening", "money_in", "money_out"))
        totals.append(
            StatementTotal(
                currency=row["currency"],
                kind=row["account__kind"],
                label=labels.get(row["account__kind"], row["account__kind"]),
                opening=opening,
                money_in=money_in,
                money_out=money_out,
                closing=opening + money_in + money_out,
            )
        )
    return totals


# --- Utilisation ---------------------------------------------------------------------------------------------------


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _split_by_day(start_ms: int, end_ms: int, weight: int, into: dict[date, int]) -> None:
    """Add `weight` times the milliseconds of [start_ms, end_ms) to each UTC day they fall in."""
    while start_ms < end_ms:
        day_end = (start_ms // DAY_MS + 1) * DAY_MS
        part_end = min(end_ms, day_end)
        day = datetime.fromtimestamp(start_ms / 1000, tz=UTC).date()
        into[day] += (part_end - start_ms) * weight
        start_ms = part_end


def online_vgpu_ms(*, node_ids: list[int], start: datetime, end: datetime) -> dict[int, dict[date, int]]:
    """Return, per node and UTC day, vGPU-milliseconds online: time online or draining, times the node's vGPUs.

    Time after now does not count (the current month ends in the future).
    """
    end = min(end, timezone.now())
    vgpus = dict(
        VGpu.objects.filter(node_id__in=node_ids).values("node_id").annotate(n=Count("pk")).values_list("node_id", "n")
    )
    nodes = Node.objects.filter(pk__in=node_ids).values_list("pk", "enrolled_at", "created_at", "deleted_at")
    events: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
    for node_id, state, at in (
        NodeEvent.objects.filter(node_id__in=node_ids, at__lt=end)
        .order_by("node_id", "at", "pk")
        .values_list("node_id", "to_state", "at")
    ):
        events[node_id].append((state, at))
    result: dict[int, dict[date, int]] = {}
    for node_id, enrolled_at, created_at, deleted_at in nodes:
        per_day: dict[date, int] = defaultdict(int)
        result[node_id] = per_day
        count = vgpus.get(node_id, 0)
        counted_from = max(start, enrolled_at or created_at)
        counted_to = min(end, deleted_at) if deleted_at else end
        if not count or counted_from >= counted_to:
            continue
        state, cursor = NodeState.PENDING, counted_from
        for to_state, at in events[node_id]:
            if at <= counted_from:
                state = to_state
                continue
            if at >= counted_to:
                break
            if state in UP_STATES:
                _split_by_day(_ms(cursor), _ms(at), count, per_day)
            state, cursor = to_state, at
        if state in UP_STATES:
            _split_by_day(_ms(cursor), _ms(counted_to), count, per_day)
    return result


@dataclass(frozen=True)
class SoldUsage:
    node_id: int
    pool_id: int
    per_day: dict  # date -> vGPU-milliseconds billed


def sold_vgpu_ms(*, start: datetime, end: datetime, node_ids: list[int] | None = None) -> list[SoldUsage]:
    """Return, per rental placement that ran in [start, end), the vGPU-milliseconds metering billed per UTC day.

    Each placement's reports are replayed from its first as metering clips them (see the module docstring), and
    only those metering has taken (seq <= metered_through_seq) count.
    """
    start_ms, end_ms = _ms(start), _ms(end)
    touched = UsageReport.objects.filter(interval_end_ms__gt=start_ms, interval_start_ms__lt=end_ms)
    placements = RentalPlacement.objects.filter(
        node_placement_id__in=touched.values("placement_id"), metered_through_seq__gt=0
    ).select_related("rental")
    if node_ids is not None:
        placements = placements.filter(node_id__in=node_ids)
    placements = {p.node_placement_id: p for p in placements}
    reports: dict[int, list[tuple]] = defaultdict(list)
    for row in (
        UsageReport.objects.filter(placement_id__in=list(placements))
        .order_by("placement_id", "seq")
        .values_list("placement_id", "seq", "interval_start_ms", "interval_end_ms", "vgpu_count")
    ):
        reports[row[0]].append(row)
    usage = []
    for node_placement_id, placement in placements.items():
        per_day: dict[date, int] = defaultdict(int)
        run_so_far = 0
        for _, seq, begin, finish, count in reports[node_placement_id]:
            if seq > placement.metered_through_seq:
                break
            if placement.bill_until_ms is not None:
                finish = min(finish, placement.bill_until_ms)
            run_ms = min(max(finish - begin, 0), max(placement.limit_ms - run_so_far, 0))
            run_so_far += run_ms
            lo, hi = max(begin, start_ms), min(begin + run_ms, end_ms)
            _split_by_day(lo, hi, min(count, placement.vgpu_count), per_day)
        usage.append(SoldUsage(node_id=placement.node_id, pool_id=placement.rental.pool_id, per_day=per_day))
    return usage


@dataclass(frozen=True)
class UtilisationDay:
    day: date
    sold_ms: int  # vGPU-milliseconds
    online_ms: int

    @property
    def sold_hours(self) -> Decimal:
        return (Decimal(self.sold_ms) / HOUR_MS).quantize(HOURS)

    @property
    def online_hours(self) -> Decimal:
        return (Decimal(self.online_ms) / HOUR_MS).quantize(HOURS)

    @property
    def percent(self) -> Decimal | None:
        """vGPU-hours sold / vGPU-hours online, in percent; None when nothing was online."""
        if not self.online_ms:
            return None
        return (Decimal(100 * self.sold_ms) / self.online_ms).quantize(PERCENT)


def _days(month: Month, sold: dict[date, int], online: dict[date, int]) -> list[UtilisationDay]:
    return [UtilisationDay(day, sold.get(day, 0), online.get(day, 0)) for day in month.days]


def utilisation_chart(days: list[UtilisationDay]) -> dict:
    """Return Chart.js data for utilisation: one bar per day, percent as exact decimal strings (gaps when offline)."""
    return {
        "labels": [d.day.isoformat() for d in days],
        "datasets": [
            {
                "label": "Utilisation (%)",
                "data": [{"x": d.day.isoformat(), "y": None if d.percent is None else str(d.percent)} for d in days],
            }
        ],
    }


# --- Provider report -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeUtilisation:
    node_id: int
    name: str
    vgpus: int
    days: list[UtilisationDay]

    @property
    def total(self) -> UtilisationDay:
        return UtilisationDay(
            day=None, sold_ms=sum(d.sold_ms for d in self.days), online_ms=sum(d.online_ms for d in self.days)
        )


def provider_utilisation(*, owner_id: int, month: Month) -> list[NodeUtilisation]:
    """Return each of a provider's nodes' utilisation per UTC day of a month."""
    nodes = list(
        Node.objects.filter(owner_id=owner_id)
        .exclude(enrolled_at__isnull=True, state=NodeState.PENDING)
        .filter(Q(deleted_at__isnull=True) | Q(deleted_at__gte=month.start))
        .annotate(vgpu_count=Count("vgpus"))
        .order_by("name", "pk")
    )
    ids = [node.pk for node in nodes]
    online = online_vgpu_ms(node_ids=ids, start=month.start, end=month.end)
    sold: dict[int, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for usage in sold_vgpu_ms(start=month.start, end=month.end, node_ids=ids):
        for day, ms in usage.per_day.items():
            sold[usage.node_id][day] += ms
    return [
        NodeUtilisation(node.pk, node.name, node.vgpu_count, _days(month, sold[node.pk], online.get(node.pk, {})))
        for node in nodes
    ]


@dataclass(frozen=True)
class DailyAmount:
    day: date
    amount: int  # base units


def earnings_per_day(*, user_id: int, month: Month, currency: str = "USDC") -> list[DailyAmount]:
    """Return what a provider earned on each UTC day of a month (credits to their earnings account), every day."""
    rows = dict(
        Entry.objects.filter(
            account__owner_id=user_id,
            account__kind=AccountKind.EARNINGS,
            currency=currency,
            amount__gt=0,
            created_at__gte=month.start,
            created_at__lt=month.end,
        )
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day")
        .annotate(total=Sum("amount"))
        .values_list("day", "total")
    )
    return [DailyAmount(day, int(rows.get(day, 0))) for day in month.days]


def daily_amount_chart(points: list[DailyAmount], *, label: str, currency: str = "USDC") -> dict:
    """Return Chart.js data for one bar per day, amounts as exact decimal strings."""
    return {
        "labels": [p.day.isoformat() for p in points],
        "datasets": [
            {
                "label": label,
                "data": [{"x": p.day.isoformat(), "y": from_base_units(p.amount, currency)} for p in points],
            }
        ],
    }


# --- Operator system report ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolReport:
    pool_id: int
    name: str
    vgpus: int  # now
    bids: int  # bids submitted in the month
    units_wanted: int  # vGPUs those bids asked for
    units_won: int  # vGPUs of those bids' allocations
    days: list[UtilisationDay]

    @property
    def total(self) -> UtilisationDay:
        return UtilisationDay(None, sum(d.sold_ms for d in self.days), sum(d.online_ms for d in self.days))


def pool_reports(*, month: Month) -> list[PoolReport]:
    """Return supply (vGPU-hours online), demand (bids, vGPUs wanted and won) and utilisation per pool and day."""
    pools = list(Pool.objects.order_by("name"))
    vgpus_by_node_pool: dict[int, dict[int, int]] = defaultdict(dict)
    for node_id, pool_id, n in (
        VGpu.objects.values("node_id", "pool_id").annotate(n=Count("pk")).values_list("node_id", "pool_id", "n")
    ):
        vgpus_by_node_pool[node_id][pool_id] = n
    node_ids = sorted(vgpus_by_node_pool)
    online = online_vgpu_ms(node_ids=node_ids, start=month.start, end=month.end)
    online_by_pool: dict[int, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for node_id, per_day in online.items():
        total = sum(vgpus_by_node_pool[node_id].values())
        for pool_id, n in vgpus_by_node_pool[node_id].items():
            for day, ms in per_day.items():
                online_by_pool[pool_id][day] += ms * n // total
    sold_by_pool: dict[int, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for usage in sold_vgpu_ms(start=month.start, end=month.end):
        for day, ms in usage.per_day.items():
            sold_by_pool[usage.pool_id][day] += ms
    demand = {
        row["pool_id"]: row
        for row in Bid.objects.filter(created_at__gte=month.start, created_at__lt=month.end)
        .values("pool_id")
        .annotate(bids=Count("pk"), units=Sum("units"))
    }
    won = dict(
        Allocation.objects.filter(bid__created_at__gte=month.start, bid__created_at__lt=month.end)
        .values("bid__pool_id")
        .annotate(units=Sum("units"))
        .values_list("bid__pool_id", "units")
    )
    supply = dict(VGpu.objects.values("pool_id").annotate(n=Count("pk")).values_list("pool_id", "n"))
    return [
        PoolReport(
            pool_id=pool.pk,
            name=pool.name,
            vgpus=supply.get(pool.pk, 0),
            bids=demand.get(pool.pk, {}).get("bids", 0),
            units_wanted=demand.get(pool.pk, {}).get("units") or 0,
            units_won=won.get(pool.pk) or 0,
            days=_days(month, sold_by_pool[pool.pk], online_by_pool[pool.pk]),
        )
        for pool in pools
    ]


@dataclass(frozen=True)
class RoundSummary:
    pool: str
    rounds: int
    filled: int  # rounds that traded at least one unit
    units: int
    buyer_payments_per_hour: int  # USDC base units, summed over the rounds
    provider_payments_per_hour: int

    @property
    def mean_buyer_price(self) -> Decimal | None:
        """USDC per vGPU-hour over every unit the month's rounds traded."""
        return (
            (Decimal(self.buyer_payments_per_hour) / 1_000_000 / self.units).quantize(Decimal("0.000001"))
            if (self.units)
            else None
        )


def round_summaries(*, month: Month) -> list[RoundSummary]:
    """Return per pool the month's rounds: how many, how many traded, units, and what buyers and providers paid."""
    rows = (
        MarketRound.objects.filter(created_at__gte=month.start, created_at__lt=month.end)
        .values("pool__name")
        .annotate(
            rounds=Count("pk"),
            filled=Count("pk", filter=Q(units_traded__gt=0)),
            units=Sum("units_traded"),
            buyer=Sum("buyer_payments_per_hour"),
            provider=Sum("provider_payments_per_hour"),
        )
        .order_by("pool__name")
    )
    return [
        RoundSummary(r["pool__name"], r["rounds"], r["filled"], r["units"] or 0, r["buyer"] or 0, r["provider"] or 0)
        for r in rows
    ]


def month_clearing_prices(*, month: Month, limit: int = 2000) -> list[MarketRound]:
    """Return the month's rounds that traded, oldest first (at most `limit`, the latest)."""
    rounds = (
        MarketRound.objects.filter(created_at__gte=month.start, created_at__lt=month.end, units_traded__gt=0)
        .select_related("pool")
        .order_by("-created_at", "-pk")[:limit]
    )
    return list(rounds)[::-1]


def round_price_chart(rounds: list[MarketRound]) -> dict:
    """Return Chart.js data for clearing prices: one buyer-price line per pool, x in epoch milliseconds."""
    series: dict[str, list[dict]] = {}
    for r in rounds:
        price = (Decimal(r.buyer_payments_per_hour) / 1_000_000 / r.units_traded).quantize(Decimal("0.000001"))
        series.setdefault(r.pool.name, []).append({"x": _ms(r.created_at), "y": str(price)})
    return {"datasets": [{"label": name, "data": data} for name, data in series.items()]}


def platform_per_day(*, kind: str, month: Month, currency: str = "USDC") -> list[DailyAmount]:
    """Return the net amount that reached a platform account (fees, market) on each UTC day of a month."""
    rows = dict(
        Entry.objects.filter(
            account__owner__isnull=True,
            account__kind=kind,
            currency=currency,
            created_at__gte=month.start,
            created_at__lt=month.end,
        )
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day")
        .annotate(total=Sum("amount"))
        .values_list("day", "total")
    )
    return [DailyAmount(day, int(rows.get(day, 0))) for day in month.days]


def platform_balance(*, kind: str, at: datetime, currency: str = "USDC") -> int:
    """Return a platform account's balance at an instant (the sum of its entries before it)."""
    total = Entry.objects.filter(
        account__owner__isnull=True, account__kind=kind, currency=currency, created_at__lt=at
    ).aggregate(total=Sum("amount"))["total"]
    return int(total or 0)


def month_batches(*, month: Month) -> list[SettlementBatch]:
    """Return the settlement batches prepared in a month, newest first."""
    return list(SettlementBatch.objects.filter(created_at__gte=month.start, created_at__lt=month.end).order_by("-seq"))


def batch_status_counts(batches: list[SettlementBatch]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for batch in batches:
        counts[batch.status] += 1
    return dict(counts)


@dataclass(frozen=True)
class OpenAlert:
    source: str
    kind: str
    message: str
    at: datetime


def open_alerts(limit: int = 200) -> list[OpenAlert]:
    """Return the alerts no operator has closed: settlement (unresolved) and abuse (unacknowledged), newest first."""
    settlement = [
        OpenAlert("Settlement", a.get_kind_display(), a.message, a.created_at)
        for a in SettlementAlert.objects.filter(resolved_at__isnull=True).order_by("-created_at", "-pk")[:limit]
    ]
    abuse = [
        OpenAlert("Reputation", a.evidence.get_kind_display(), a.message, a.created_at)
        for a in Alert.objects.filter(acknowledged_at__isnull=True)
        .select_related("evidence")
        .order_by("-created_at", "-pk")[:limit]
    ]
    return sorted(settlement + abuse, key=lambda a: a.at, reverse=True)[:limit]
