"""Service reads: a rental's endpoint URLs, tokens and counters."""

import time

from django.conf import settings
from django.core.cache import cache

from marketplace.rentals.models import Rental
from marketplace.svc.models import ServiceStats, ServiceToken


def service_base_url() -> str:
    """Return the origin services are served from ("" when it is the site's own)."""
    return (settings.SERVICE_PUBLIC_URL or settings.SERVICE_ORIGIN).rstrip("/")


def service_urls(rental: Rental) -> dict[str, str]:
    """Return each exposed port's URL, by port name."""
    if not rental.service_slug:
        return {}
    base = service_base_url()
    return {entry["name"]: f"{base}/svc/{rental.service_slug}/{entry['name']}/" for entry in rental.expose}


def service_stats(rental: Rental) -> list[dict]:
    """Return the counters of each exposed port (zeros for a port nobody called yet)."""
    rows = {row.port_name: row for row in ServiceStats.objects.filter(rental=rental)}
    out = []
    for entry in rental.expose:
        row = rows.get(entry["name"])
        requests = row.requests if row else 0
        out.append(
            {
                "port_name": entry["name"],
                "requests": requests,
                "errors": row.errors if row else 0,
                "bytes_in": row.bytes_in if row else 0,
                "bytes_out": row.bytes_out if row else 0,
                "latency_ms_mean": round(row.latency_ms_total / requests, 1) if row and requests else None,
                "latency_ms_max": row.latency_ms_max if row and requests else None,
                "overlay_requests": row.overlay_requests if row else 0,
            }
        )
    return out


def service_tokens(rental: Rental):
    """Return the service's tokens, newest first (never the secret)."""
    return ServiceToken.objects.filter(rental=rental).order_by("-created_at", "-pk")


INGRESS_REGISTRY_KEY = "svc:ingress:tunnel-addresses"
INGRESS_REGISTRY_TTL_SECONDS = 30


def service_tunnel_addresses() -> list[str]:
    """Return where agents dial their service tunnels: SERVICE_INGRESS_TUNNEL_ADDRESSES, else the running ingresses.

    Each ingress process records its tunnel address in the cache every few seconds (svc.ingress.registry).
    """
    if settings.SERVICE_INGRESS_TUNNEL_ADDRESSES:
        return list(settings.SERVICE_INGRESS_TUNNEL_ADDRESSES)
    now = time.time()
    registered = cache.get(INGRESS_REGISTRY_KEY) or {}
    live = sorted(address for address, seen in registered.items() if now - seen < INGRESS_REGISTRY_TTL_SECONDS)
    return live or [settings.SERVICE_INGRESS_TUNNEL_LISTEN]


def service_ingress_register(address: str) -> None:
    """Record that an ingress serves tunnels at `address` now (called every few seconds by each ingress)."""
    now = time.time()
    registered = cache.get(INGRESS_REGISTRY_KEY) or {}
    registered = {a: seen for a, seen in registered.items() if now - seen < INGRESS_REGISTRY_TTL_SECONDS}
    registered[address] = now
    cache.set(INGRESS_REGISTRY_KEY, registered, INGRESS_REGISTRY_TTL_SECONDS)
