"""Prometheus counters the web tier and the Celery worker keep (no Django import: celery.py loads it early).

With PROMETHEUS_MULTIPROC_DIR set before this module is first imported, prometheus-client keeps every value in
files there (one per process), so granian's and Celery's worker processes add up when /metrics reads the folder.
Without it (the embedded default, tests) the values live in this process. See docs/metrics.md.
"""

import os

from prometheus_client import Counter, Histogram

if _directory := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(_directory, exist_ok=True)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUESTS = Counter(
    "janction_http_requests_total",
    "HTTP requests answered by the web tier, by method, route pattern and status code.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "janction_http_request_duration_seconds",
    "Time from the request reaching Django to the response leaving it, by method and route pattern.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
CELERY_TASKS = Counter(
    "janction_celery_tasks_total", "Celery tasks the worker finished, by task name and outcome.", ["task", "outcome"]
)
CELERY_TASK_DURATION = Histogram(
    "janction_celery_task_duration_seconds",
    "Time a Celery task ran in the worker, by task name.",
    ["task"],
    buckets=(*LATENCY_BUCKETS, 60.0, 300.0),
)
