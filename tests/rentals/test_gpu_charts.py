"""GPU telemetry history from heartbeats, and the rental and node charts drawn from it (equal to the rows)."""

import html
import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from marketplace.rentals.models import Rental
from marketplace.selectors import rental_gpu_telemetry, telemetry_charts
from nodes.models import GpuTelemetrySample
from nodes.services import GpuSampleReport, NodeHeartbeat, node_heartbeats_apply
from tests.factories import UserFactory
from tests.rentals.conftest import report_state, run_round, submit, sync

pytestmark = pytest.mark.django_db(transaction=True)


def _beat(node, at, utilization: int, memory: int) -> NodeHeartbeat:
    gpu = node.gpus.get()
    sample = GpuSampleReport(
        index=0, utilization_percent=utilization, memory_used_bytes=memory, temperature_celsius=60,
        power_milliwatts=100_000, compute_processes=1,
    )  # fmt: skip
    return NodeHeartbeat(node_id=node.pk, received_at=at, gpu_samples={gpu.pk: sample})


def test_heartbeats_keep_one_sample_per_gpu_per_interval_and_drop_old_ones(node, settings):
    settings.NODES_GPU_TELEMETRY_INTERVAL_SECONDS = 10
    now = timezone.now()
    gpu = node.gpus.get()
    GpuTelemetrySample.objects.create(gpu=gpu, at=now - timedelta(days=8), utilization_percent=1, memory_used_bytes=1)
    node_heartbeats_apply(heartbeats=[_beat(node, now, 40, 2**30)])
    node_heartbeats_apply(heartbeats=[_beat(node, now + timedelta(seconds=4), 90, 2**30)])  # inside the interval
    node_heartbeats_apply(heartbeats=[_beat(node, now + timedelta(seconds=11), 70, 3 * 2**30)])
    kept = list(GpuTelemetrySample.objects.order_by("at").values_list("utilization_percent", "memory_used_bytes"))
    assert kept == [(40, 2**30), (70, 3 * 2**30)]  # the 8-day-old one is pruned
    gpu.refresh_from_db()
    assert gpu.utilization_percent == 70  # the latest value is still written as before


def test_the_rental_charts_are_its_gpus_samples_while_it_ran(buyer, node, client):
    rental = run_round(submit(buyer, max_duration_seconds=600))
    placement = rental.placements.get()
    report_state(placement, "running")
    sync()
    rental.refresh_from_db()
    gpu = node.gpus.get()
    start = rental.started_at
    GpuTelemetrySample.objects.create(
        gpu=gpu, at=start - timedelta(seconds=30), utilization_percent=5, memory_used_bytes=0
    )
    for i, (util, mem) in enumerate([(10, 2**30), (55, 5 * 2**30), (99, 11 * 2**30)]):
        GpuTelemetrySample.objects.create(
            gpu=gpu, at=start + timedelta(seconds=10 * (i + 1)), utilization_percent=util, memory_used_bytes=mem
        )
    points = rental_gpu_telemetry(rental)
    assert [(p.utilization_percent, p.memory_used_bytes) for p in points] == [
        (10, 2**30), (55, 5 * 2**30), (99, 11 * 2**30),
    ]  # fmt: skip
    charts = telemetry_charts(points)
    (util,) = charts["utilization"]["datasets"]
    (memory,) = charts["memory"]["datasets"]
    assert [Decimal(p["y"]) for p in util["data"]] == [10, 55, 99]
    assert [Decimal(p["y"]) for p in memory["data"]] == [1, 5, 11]
    assert util["label"] == "GPU 0 RTX 4090"

    client.force_login(buyer)
    for path in (f"/rentals/{rental.pk}/", f"/rentals/{rental.pk}/gpu/"):
        page = client.get(path).content.decode()
        attribute = re.search(r'<canvas id="gpu-util-chart" data-chart-json="([^"]*)"', page).group(1)
        embedded = json.loads(html.unescape(attribute))
        assert embedded == json.loads(json.dumps(charts["utilization"]))
    other = UserFactory()
    client.force_login(other)
    assert client.get(f"/rentals/{rental.pk}/gpu/").status_code == 404
    assert Rental.objects.count() == 1


def test_the_node_page_charts_its_gpus(node, client):
    gpu = node.gpus.get()
    GpuTelemetrySample.objects.create(gpu=gpu, at=timezone.now(), utilization_percent=42, memory_used_bytes=2**31)
    client.force_login(node.owner)
    page = client.get("/nodes/").content.decode()
    data = json.loads(
        re.search(rf'<script id="node-{node.pk}-util" type="application/json">(.*?)</script>', page).group(1)
    )
    assert [p["y"] for p in data["datasets"][0]["data"]] == ["42"]
    assert 'src="/static/vendor/chart.umd.min.js"' in page
