"""Prometheus `/metrics` for operators (docs/metrics.md): request counters, the worker's and the gateway's
counters, and the figures the system report shows, read from the database at scrape time.

Not public: with neither METRICS_TOKEN nor METRICS_ALLOWED_NETWORKS set the path is a 404; otherwise a scrape
must carry the token (when set) and come from an allowed network (when set), or it gets a 403.
"""

import hmac
import ipaddress
import time
from pathlib import Path

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.db.models import Count
from django.http import Http404, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector

from janction.instruments import HTTP_LATENCY, HTTP_REQUESTS
from ledger.currencies import USDC_SCALE
from ledger.models import Account, AccountKind, SettlementAlert, SettlementBatch
from marketplace.rentals.models import Rental, RentalState
from nodes.models import Node, NodeState
from pricing.selectors import pool_markets

PROCESS_KINDS = ("web", "gateway", "worker")


# -- Requests ----------------------------------------------------------------------------------------------------


def _route(request) -> str:
    match = getattr(request, "resolver_match", None)
    return match.route if match is not None and match.route else "unmatched"


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _observe(request, status: int, started: float) -> None:
    route = _route(request)
    method = request.method if request.method in METHODS else "other"  # a client picks the method: keep it bounded
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - started)


class RequestMetricsMiddleware:
    """Count every response by method, route pattern (bounded: never the raw path) and status, and time it."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        started = time.perf_counter()
        response = self.get_response(request)
        _observe(request, response.status_code, started)
        return response

    async def __acall__(self, request):
        started = time.perf_counter()
        response = await self.get_response(request)
        _observe(request, response.status_code, started)
        return response


# -- Business figures ------------------------------------------------------------------------------------------


class SystemFiguresCollector:
    """The system report's figures, read from the database on each scrape."""

    def collect(self):
        nodes = GaugeMetricFamily("janction_nodes", "Nodes by state (deleted nodes left out).", labels=["state"])
        counts = dict(
            Node.objects.filter(deleted_at__isnull=True).values_list("state").annotate(n=Count("pk")).order_by()
        )
        for state in NodeState.values:
            nodes.add_metric([state], counts.get(state, 0))
        yield nodes

        vgpus = GaugeMetricFamily("janction_pool_vgpus", "vGPUs of each pool: free or busy.", labels=["pool", "state"])
        price = GaugeMetricFamily(
            "janction_pool_last_price_usdc_per_vgpu_hour",
            "Price per vGPU-hour of each pool's last round that traded: what buyers paid and providers got.",
            labels=["pool", "side"],
        )
        demand = GaugeMetricFamily("janction_pool_demand_vgpus", "vGPUs pending bids ask for.", labels=["pool"])
        for market in pool_markets():
            vgpus.add_metric([market.name, "free"], market.vgpus_free)
            vgpus.add_metric([market.name, "busy"], market.vgpus_busy)
            demand.add_metric([market.name], market.demand_units)
            if market.last_buyer_price is not None:
                price.add_metric([market.name, "buyer"], float(market.last_buyer_price))
                price.add_metric([market.name, "provider"], float(market.last_provider_price))
        yield from (vgpus, price, demand)

        rentals = GaugeMetricFamily("janction_rentals", "Rentals by state.", labels=["state"])
        counts = dict(Rental.objects.values_list("state").annotate(n=Count("pk")).order_by())
        for state in RentalState.values:
            rentals.add_metric([state], counts.get(state, 0))
        yield rentals

        balances = GaugeMetricFamily(
            "janction_platform_balance_usdc", "The platform's USDC accounts: market account, fees.", labels=["account"]
        )
        held = dict(
            Account.objects.filter(
                owner__isnull=True, currency="USDC", kind__in=[AccountKind.MARKET, AccountKind.FEES]
            ).values_list("kind", "balance")
        )
        for kind in (AccountKind.MARKET, AccountKind.FEES):
            balances.add_metric([str(kind)], int(held.get(kind, 0)) / USDC_SCALE)
        yield balances

        batches = GaugeMetricFamily("janction_settlement_batches", "Settlement batches by status.", labels=["status"])
        counts = dict(SettlementBatch.objects.values_list("status").annotate(n=Count("pk")).order_by())
        for status in SettlementBatch.Status.values:
            batches.add_metric([status], counts.get(status, 0))
        yield batches

        alerts = GaugeMetricFamily("janction_settlement_alerts_open", "Unresolved settlement alerts.", labels=["kind"])
        counts = dict(
            SettlementAlert.objects.filter(resolved_at__isnull=True)
            .values_list("kind")
            .annotate(n=Count("pk"))
            .order_by()
        )
        for kind in SettlementAlert.Kind.values:
            alerts.add_metric([kind], counts.get(kind, 0))
        yield alerts


# -- The endpoint --------------------------------------------------------------------------------------------------


def scrape_refusal(request) -> HttpResponse | None:
    """Return the 403 for a scrape that lacks the token or comes from elsewhere, None to serve it; 404 if disabled."""
    token, networks = settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS
    if not token and not networks:
        raise Http404("Metrics are off: set METRICS_TOKEN or METRICS_ALLOWED_NETWORKS.")
    if token:
        sent = request.headers.get("Authorization", "")
        if not sent.startswith("Bearer ") or not hmac.compare_digest(sent[7:].strip().encode(), token.encode()):
            return HttpResponse(
                "Send Authorization: Bearer <METRICS_TOKEN>.\n", status=403, content_type="text/plain; charset=utf-8"
            )
    if networks:
        try:
            address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
        except ValueError:
            address = None
        if address is None or not any(address in ipaddress.ip_network(n, strict=False) for n in networks):
            return HttpResponse(
                "This address may not read the metrics.\n", status=403, content_type="text/plain; charset=utf-8"
            )
    return None


def _process_registry() -> CollectorRegistry:
    """Return the counters of every process: the multiprocess folders that exist, else this process's own."""
    folders = [Path(settings.METRICS_DIR) / kind for kind in PROCESS_KINDS]
    folders = [folder for folder in folders if folder.is_dir() and any(folder.glob("*.db"))]
    if not folders:
        return REGISTRY
    registry = CollectorRegistry()
    for folder in folders:
        MultiProcessCollector(registry, path=str(folder))
    return registry


@require_GET
def metrics_view(request):
    """Serve the Prometheus text format to an allowed scraper."""
    refusal = scrape_refusal(request)
    if refusal is not None:
        return refusal
    figures = CollectorRegistry(auto_describe=False)
    figures.register(SystemFiguresCollector())
    body = generate_latest(_process_registry()) + generate_latest(figures)
    return HttpResponse(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)
