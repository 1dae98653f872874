"""GPU telemetry history: heartbeat samples kept at most once per GPU per interval, and the series the charts draw."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from nodes.models import GpuTelemetrySample


def gpu_telemetry_record(*, samples: list[tuple[int, datetime, int, int]]) -> int:
    """Keep (gpu_id, at, utilization %, memory used bytes) samples that are due; prune old ones. Return kept count.

    Called in the heartbeat flush's transaction: one read of the GPUs' last sample times, one insert, one delete.
    """
    if not samples:
        return 0
    interval = timedelta(seconds=settings.NODES_GPU_TELEMETRY_INTERVAL_SECONDS)
    gpu_ids = {gpu_id for gpu_id, *_ in samples}
    last = dict(
        GpuTelemetrySample.objects.filter(gpu_id__in=gpu_ids)
        .values("gpu_id")
        .annotate(last=Max("at"))
        .values_list("gpu_id", "last")
    )
    rows = []
    for gpu_id, at, utilization, memory in sorted(samples, key=lambda sample: sample[1]):
        previous = last.get(gpu_id)
        if previous is not None and at - previous < interval:
            continue
        last[gpu_id] = at
        rows.append(
            GpuTelemetrySample(
                gpu_id=gpu_id,
                at=at,
                utilization_percent=min(max(utilization, 0), 100),
                memory_used_bytes=max(memory, 0),
            )
        )
    GpuTelemetrySample.objects.bulk_create(rows)
    cutoff = timezone.now() - timedelta(days=settings.NODES_GPU_TELEMETRY_RETENTION_DAYS)
    GpuTelemetrySample.objects.filter(gpu_id__in=gpu_ids, at__lt=cutoff).delete()
    return len(rows)


@dataclass(frozen=True)
class TelemetryPoint:
    gpu_id: int
    at: datetime
    utilization_percent: int
    memory_used_bytes: int


def gpu_telemetry(*, gpu_ids: list[int], since: datetime, until: datetime | None = None) -> list[TelemetryPoint]:
    """Return the kept samples of these GPUs between `since` and `until` (now), oldest first."""
    rows = GpuTelemetrySample.objects.filter(gpu_id__in=gpu_ids, at__gte=since)
    if until is not None:
        rows = rows.filter(at__lte=until)
    return [
        TelemetryPoint(
            gpu_id=r.gpu_id, at=r.at, utilization_percent=r.utilization_percent, memory_used_bytes=r.memory_used_bytes
        )
        for r in rows.order_by("at", "pk")[:5000]
    ]
