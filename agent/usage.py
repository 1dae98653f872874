"""Metering: cut each running placement's time into contiguous, signed usage reports.

Intervals are [start, end) in Unix milliseconds; a report's vGPU-milliseconds are its vGPU
count times the interval's length. The first interval starts when the workload started
running; a report is due every `interval_ms` while it runs, and a last one covers the time up
to its exit. Reports stay pending (persisted in the state file) until the gateway acks them.
"""

from __future__ import annotations

import logging

from cryptography.hazmat.primitives.asymmetric import ec

from agent.protocol.signing import sign_usage_report
from agent.state import PlacementRecord, UsageRecord

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 10
MAX_PENDING_REPORTS = 8640


class UsageMeter:
    """Issues signed usage reports for placements."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, *, interval_ms: int = DEFAULT_INTERVAL_SECONDS * 1000) -> None:
        self._key = key
        self.interval_ms = interval_ms

    def next_report(self, record: PlacementRecord, now_ms: int) -> UsageRecord | None:
        """Return the placement's next report when one is due, recording it as pending."""
        if record.started_at_ms == 0:
            return None
        start = max(record.usage_end_ms, record.started_at_ms)
        if record.state in ("exited", "failed", "lost"):
            end = record.ended_at_ms
        elif record.state == "running" and now_ms - start >= self.interval_ms:
            end = now_ms
        else:
            return None
        if end <= start:
            return None
        vgpus = len(record.vgpu_local_ids)
        report = UsageRecord(
            placement_id=record.placement_id,
            seq=record.usage_seq + 1,
            interval_start_ms=start,
            interval_end_ms=end,
            vgpu_count=vgpus,
            vgpu_milliseconds=vgpus * (end - start),
        )
        report.signature = sign_usage_report(self._key, report)
        record.usage_seq = report.seq
        record.usage_end_ms = end
        record.pending_usage.append(report)
        if len(record.pending_usage) > MAX_PENDING_REPORTS:
            dropped = record.pending_usage.pop(0)
            log.warning("placement %s: dropping unacknowledged usage report %s", record.placement_id, dropped.seq)
        return report

    @staticmethod
    def acknowledge(record: PlacementRecord, seq: int) -> bool:
        """Forget the pending report `seq`; return whether it was pending."""
        before = len(record.pending_usage)
        record.pending_usage = [report for report in record.pending_usage if report.seq != seq]
        return len(record.pending_usage) != before
