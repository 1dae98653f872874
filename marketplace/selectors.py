"""Reads behind the browser pages: network figures, the market's pools and nodes, clearing prices, statements.

Each chart on a page is drawn from one of these functions' results as they are, so a test can compare a chart's
data with the database aggregate it shows by calling the same function.
"""

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from ledger.currencies import from_base_units
from ledger.models import AccountKind, Entry
from ledger.selectors import entries_for_user
from nodes.models import Gpu, Node, NodeState, VGpu
from nodes.telemetry import TelemetryPoint, gpu_telemetry
from pricing.models import MarketRound
from pricing.selectors import PoolMarket, pool_markets
from reputation.models import SubjectKind
from reputation.selectors import scores

MICRO = Decimal("0.000001")
FINISHED_PLACEMENT_STATES = ("exited", "failed", "lost")


@dataclass(frozen=True)
class NetworkFigures:
    nodes_online: int
    vgpus_total: int
    vgpus_free: int
    vgpus_busy: int
    pools: list[PoolMarket]


def network_figures() -> NetworkFigures:
    """Return what the landing page shows live: online nodes and every pool's free/busy vGPUs and last prices."""
    pools = pool_markets()
    return NetworkFigures(
        nodes_online=Node.objects.filter(state=NodeState.ONLINE, deleted_at__isnull=True).count(),
        vgpus_total=sum(pool.vgpus_total for pool in pools),
        vgpus_free=sum(pool.vgpus_free for pool in pools),
        vgpus_busy=sum(pool.vgpus_busy for pool in pools),
        pools=pools,
    )


@dataclass(frozen=True)
class PoolSpec:
    market: PoolMarket
    gpu_models: list[str]
    vgpu_memory_gib: Decimal | None
    compute_share_percent: int | None
    nodes: int


def pool_catalog() -> list[PoolSpec]:
    """Return every pool with the GPU models behind its vGPUs and what one vGPU is (memory, share of a GPU)."""
    catalog = []
    for market in pool_markets():
        vgpus = VGpu.objects.filter(pool__name=market.name, node__deleted_at__isnull=True)
        models = sorted(set(vgpus.values_list("gpu__name", flat=True)))
        first = vgpus.order_by("pk").values("memory_bytes", "compute_share_percent").first()
        catalog.append(
            PoolSpec(
                market=market,
                gpu_models=models,
                vgpu_memory_gib=first and (Decimal(first["memory_bytes"]) / 2**30).quantize(Decimal("0.1")),
                compute_share_percent=first and first["compute_share_percent"],
                nodes=vgpus.values("node_id").distinct().count(),
            )
        )
    return catalog


def node_alias(node_id: int) -> str:
    """Return a stable public name for a node that reveals neither its owner, its name nor its database id."""
    digest = hmac.new(settings.SECRET_KEY.encode(), f"node:{node_id}".encode(), hashlib.sha256).hexdigest()
    return f"node-{digest[:8]}"


@dataclass(frozen=True)
class MarketNode:
    alias: str
    state: str
    state_label: str
    region: str
    pools: list[str]
    gpu_models: list[str]
    vgpus_total: int
    vgpus_free: int
    ask: str | None  # USDC per vGPU-hour; None while the provider has paused the ask
    fake: bool
    placements_finished: int
    placements_exited: int
    score: Decimal = Decimal("0.5")  # reputation score in [0, 1] (docs/reputation.md)

    @property
    def reliability_percent(self) -> int | None:
        """Share of the node's finished placements that ran to their own exit (not failed, not lost)."""
        if not self.placements_finished:
            return None
        return round(100 * self.placements_exited / self.placements_finished)


def market_nodes(
    *,
    pool: str = "",
    gpu_model: str = "",
    region: str = "",
    max_price: Decimal | None = None,
    min_reliability: int | None = None,
    min_score: Decimal | None = None,
) -> list[MarketNode]:
    """Return the enrolled nodes, anonymised, with their pools, GPUs, ask and reliability; filters narrow them."""
    nodes = (
        Node.objects.filter(deleted_at__isnull=True)
        .exclude(state=NodeState.PENDING)
        .select_related("owner__profile")
        .annotate(
            vgpus_total=Count("vgpus", distinct=True),
            vgpus_free=Count("vgpus", filter=Q(vgpus__state="free"), distinct=True),
            placements_finished=Count(
                "placements", filter=Q(placements__state__in=FINISHED_PLACEMENT_STATES), distinct=True
            ),
            placements_exited=Count("placements", filter=Q(placements__state="exited"), distinct=True),
        )
        .order_by("reserve_price_per_hour", "pk")
    )
    if pool:
        nodes = nodes.filter(vgpus__pool__name=pool)
    if gpu_model:
        nodes = nodes.filter(gpus__name=gpu_model)
    if region:
        nodes = nodes.filter(owner__profile__region=region)
    if max_price is not None:
        nodes = nodes.filter(reserve_price_per_hour__lte=int(max_price * 1_000_000), ask_paused=False)
    nodes = list(nodes.distinct())
    pools_of: dict[int, set[str]] = {}
    for node_id, name in VGpu.objects.filter(node__in=nodes).values_list("node_id", "pool__name"):
        pools_of.setdefault(node_id, set()).add(name)
    models_of: dict[int, set[str]] = {}
    for node_id, name in Gpu.objects.filter(node__in=nodes).values_list("node_id", "name"):
        models_of.setdefault(node_id, set()).add(name)
    node_scores = scores(kind=SubjectKind.NODE, ids=[node.pk for node in nodes])
    rows = []
    for node in nodes:
        if min_score is not None and node_scores[node.pk] < min_score:
            continue
        profile = getattr(node.owner, "profile", None)
        row = MarketNode(
            alias=node_alias(node.pk),
            state=node.state,
            state_label=node.get_state_display(),
            region=profile.get_region_display() if profile else "",
            pools=sorted(pools_of.get(node.pk, ())),
            gpu_models=sorted(models_of.get(node.pk, ())),
            vgpus_total=node.vgpus_total,
            vgpus_free=node.vgpus_free,
            ask=None if node.ask_paused else from_base_units(node.reserve_price_per_hour, "USDC"),
            fake=node.has_fake_gpus,
            placements_finished=node.placements_finished,
            placements_exited=node.placements_exited,
            score=node_scores[node.pk],
        )
        if min_reliability is not None and (row.reliability_percent or 0) < min_reliability:
            continue
        rows.append(row)
    return rows


def gpu_models() -> list[str]:
    """Return the GPU models of enrolled nodes, for the market's filter."""
    return sorted(set(Gpu.objects.filter(node__deleted_at__isnull=True).values_list("name", flat=True)))


@dataclass(frozen=True)
class ClearingPrice:
    round_id: int
    pool: str
    at: object
    units: int
    buyer_price: Decimal  # USDC per vGPU-hour, the round's buyer payments over the units it traded
    provider_price: Decimal


def clearing_prices(*, pool: str = "", limit: int = 200) -> list[ClearingPrice]:
    """Return the clearing prices of the latest rounds that traded, oldest first (the market's price chart)."""
    rounds = MarketRound.objects.filter(units_traded__gt=0).select_related("pool").order_by("-created_at", "-pk")
    if pool:
        rounds = rounds.filter(pool__name=pool)
    points = [
        ClearingPrice(
            round_id=r.pk,
            pool=r.pool.name,
            at=r.created_at,
            units=r.units_traded,
            buyer_price=(Decimal(r.buyer_payments_per_hour) / 1_000_000 / r.units_traded).quantize(MICRO),
            provider_price=(Decimal(r.provider_payments_per_hour) / 1_000_000 / r.units_traded).quantize(MICRO),
        )
        for r in rounds[:limit]
    ]
    return points[::-1]


def clearing_price_chart(points: list[ClearingPrice]) -> dict:
    """Return Chart.js data for clearing prices: one buyer-price line per pool, x in epoch milliseconds."""
    series: dict[str, list[dict]] = {}
    for point in points:
        series.setdefault(point.pool, []).append({"x": int(point.at.timestamp() * 1000), "y": str(point.buyer_price)})
    return {"datasets": [{"label": name, "data": data} for name, data in series.items()]}


def statement_entries(*, user_id: int, currency: str = "", month: tuple[int, int] | None = None) -> QuerySet[Entry]:
    """Return a user's ledger entries for the statement, newest first, optionally in one currency and UTC month."""
    entries = entries_for_user(user_id=user_id)
    if currency:
        entries = entries.filter(currency=currency)
    if month is not None:
        year, number = month
        start = datetime(year, number, 1, tzinfo=UTC)
        end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)
        entries = entries.filter(created_at__gte=start, created_at__lt=end)
    return entries


@dataclass(frozen=True)
class DailyAmount:
    day: object  # datetime.date (UTC)
    amount: int  # base units


def earnings_by_day(*, user_id: int, currency: str = "USDC", days: int = 30) -> list[DailyAmount]:
    """Return what a provider earned each UTC day of the last `days` days (credits to their earnings account)."""
    since = timezone.now() - timedelta(days=days)
    rows = (
        Entry.objects.filter(
            account__owner_id=user_id,
            account__kind=AccountKind.EARNINGS,
            currency=currency,
            amount__gt=0,
            created_at__gte=since,
        )
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day")
        .annotate(total=Sum("amount"))
        .order_by("day")
    )
    return [DailyAmount(day=row["day"], amount=int(row["total"])) for row in rows]


def earnings_chart(points: list[DailyAmount], currency: str = "USDC") -> dict:
    """Return Chart.js data for daily earnings: one bar per day, amounts as exact decimal strings."""
    return {
        "labels": [point.day.isoformat() for point in points],
        "datasets": [
            {
                "label": f"Earned ({currency})",
                "data": [{"x": p.day.isoformat(), "y": from_base_units(p.amount, currency)} for p in points],
            }
        ],
    }


def rental_gpu_ids(rental) -> list[int]:
    """Return the GPUs that hold (or held) a rental's vGPUs."""
    gpu_ids: set[int] = set()
    for node_id, local_ids in rental.placements.values_list("node_id", "vgpu_local_ids"):
        gpu_ids.update(VGpu.objects.filter(node_id=node_id, local_id__in=local_ids).values_list("gpu_id", flat=True))
    return sorted(gpu_ids)


def rental_gpu_telemetry(rental) -> list[TelemetryPoint]:
    """Return the heartbeat samples of a rental's GPUs while it ran (from its start to its end, or now)."""
    since = rental.started_at or rental.created_at
    return gpu_telemetry(gpu_ids=rental_gpu_ids(rental), since=since, until=rental.ended_at)


def node_gpu_telemetry(node, *, hours: int = 6) -> list[TelemetryPoint]:
    """Return the heartbeat samples of a node's GPUs over the last `hours` hours."""
    gpu_ids = list(Gpu.objects.filter(node=node).values_list("pk", flat=True))
    return gpu_telemetry(gpu_ids=gpu_ids, since=timezone.now() - timedelta(hours=hours))


def telemetry_charts(points: list[TelemetryPoint]) -> dict:
    """Return Chart.js data for two charts, utilisation (%) and memory used (GiB), one line per GPU."""
    names = dict(Gpu.objects.filter(pk__in={p.gpu_id for p in points}).values_list("pk", "name"))
    index = dict(Gpu.objects.filter(pk__in={p.gpu_id for p in points}).values_list("pk", "index"))
    utilization: dict[int, list[dict]] = {}
    memory: dict[int, list[dict]] = {}
    for point in points:
        x = int(point.at.timestamp() * 1000)
        utilization.setdefault(point.gpu_id, []).append({"x": x, "y": str(point.utilization_percent)})
        gib = (Decimal(point.memory_used_bytes) / 2**30).quantize(Decimal("0.01"))
        memory.setdefault(point.gpu_id, []).append({"x": x, "y": str(gib)})

    def label(gpu_id: int) -> str:
        return f"GPU {index.get(gpu_id, '?')} {names.get(gpu_id, '')}".strip()

    return {
        "utilization": {"datasets": [{"label": label(g), "data": d} for g, d in utilization.items()]},
        "memory": {"datasets": [{"label": label(g), "data": d} for g, d in memory.items()]},
    }
