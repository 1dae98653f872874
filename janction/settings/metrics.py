"""Prometheus `/metrics` (docs/metrics.md): who may read it, and where the processes keep their counters."""

import ipaddress

from django.core.exceptions import ImproperlyConfigured

from .base import VAR_DIR
from .env import env_list, env_str

# A scrape must send `Authorization: Bearer <METRICS_TOKEN>` (when set) and come from METRICS_ALLOWED_NETWORKS
# (when set, comma-separated CIDRs, matched against the connecting address). With neither set /metrics is a 404.
METRICS_TOKEN = env_str("METRICS_TOKEN")
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", [])
if METRICS_TOKEN and len(METRICS_TOKEN) < 24:
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 24 characters (try: openssl rand -hex 24).")
for _network in METRICS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"METRICS_ALLOWED_NETWORKS: {_network!r} is not a network; write CIDRs like 10.0.0.0/8,127.0.0.1/32."
        ) from None

# Each process kind writes its counters (prometheus-client's multiprocess mode) into its own folder here:
# web/ (scripts/serve.sh), gateway/ and worker/ (PROMETHEUS_MULTIPROC_DIR set by whoever starts them).
# The web tier's /metrics reads every folder that exists.
METRICS_DIR = env_str("JANCTION_METRICS_DIR") or str(VAR_DIR / "metrics")
