"""Rate limits kept in the Django cache (Redis in real mode), so they hold across worker processes.

Fixed windows counted with the cache's atomic increment: `JANCTION_RATE_LIMIT_IP` bounds every API
request per client address, checked in middleware before authentication (so that guessing API keys is
limited too); `JANCTION_RATE_LIMIT_KEY` bounds each API key (or signed-in user) in DRF. Over a limit
the answer is 429 with Retry-After. A rate is "N/second", "N/minute", "N/hour" or "N/day"; empty turns
the limit off.
"""

import math
import time

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.http import JsonResponse
from rest_framework.throttling import BaseThrottle

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int] | None:
    """Return (requests, period in seconds) for a rate such as "600/min", or None when it is empty."""
    if not rate:
        return None
    count, _, period = rate.partition("/")
    try:
        return int(count), _PERIODS[period.strip()[:1]]
    except (ValueError, KeyError):
        raise ImproperlyConfigured(
            f"{rate!r} is not a rate; write it as 600/min (second, minute, hour, day)."
        ) from None


def rate_limit_wait(scope: str, ident: str, rate: str) -> float | None:
    """Count one request of `ident` against `rate`; return the seconds to wait when over it, else None."""
    parsed = parse_rate(rate)
    if parsed is None:
        return None
    limit, period = parsed
    now = time.time()
    window = int(now // period)
    key = f"ratelimit:{scope}:{ident}:{window}"
    cache.add(key, 0, timeout=period + 1)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=period + 1)
        count = 1
    if count <= limit:
        return None
    return (window + 1) * period - now


def client_ip(request) -> str:
    """Return the client's address: REMOTE_ADDR, or the JANCTION_TRUSTED_PROXIES-th X-Forwarded-For hop."""
    proxies = settings.JANCTION_TRUSTED_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-min(proxies, len(hops))]
    return request.META.get("REMOTE_ADDR", "")


def too_many_requests(wait: float) -> JsonResponse:
    """Render the 429 that every limit answers with."""
    seconds = max(1, math.ceil(wait))
    response = JsonResponse(
        {
            "code": "throttled",
            "message": f"Too many requests; retry in {seconds} seconds.",
            "detail": {"retry_after_seconds": seconds},
        },
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response


class IpRateLimitMiddleware:
    """Limit API requests per client address before anything else runs."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/api/v1/"):
            wait = rate_limit_wait("ip", client_ip(request), settings.JANCTION_RATE_LIMIT_IP)
            if wait is not None:
                return too_many_requests(wait)
        return self.get_response(request)


class ApiKeyRateThrottle(BaseThrottle):
    """DRF throttle: limit each API key (or, for browser sessions, each user)."""

    def allow_request(self, request, view):
        if not request.user or not request.user.is_authenticated:
            return True  # anonymous requests are bounded by the per-address limit
        key_id = getattr(request.auth, "pk", None)
        ident = f"key{key_id}" if key_id is not None else f"user{request.user.pk}"
        self._wait = rate_limit_wait("key", ident, settings.JANCTION_RATE_LIMIT_KEY)
        return self._wait is None

    def wait(self):
        return self._wait
