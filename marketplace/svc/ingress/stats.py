"""Per-service counters kept in memory by an ingress process and added to the database every few seconds."""

from __future__ import annotations

import threading
from collections import defaultdict

from marketplace.svc.services import service_stats_add


class StatsBuffer:
    """Counters by (rental id, port name); `flush` writes and resets them (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[int, str], dict[str, int]] = defaultdict(self._zero)

    @staticmethod
    def _zero() -> dict[str, int]:
        return {
            "requests": 0,
            "errors": 0,
            "bytes_in": 0,
            "bytes_out": 0,
            "latency_ms_total": 0,
            "latency_ms_max": 0,
            "overlay_requests": 0,
        }

    def add(
        self,
        *,
        rental_id: int,
        port_name: str,
        status: int,
        bytes_in: int,
        bytes_out: int,
        latency_ms: int,
        overlay: bool = False,
    ):
        with self._lock:
            row = self._rows[(rental_id, port_name)]
            row["requests"] += 1
            row["errors"] += status >= 500
            row["bytes_in"] += bytes_in
            row["bytes_out"] += bytes_out
            row["latency_ms_total"] += latency_ms
            row["latency_ms_max"] = max(row["latency_ms_max"], latency_ms)
            row["overlay_requests"] += overlay

    def flush(self) -> None:
        """Add what was counted since the last flush to the database; on failure the counts are kept for later."""
        with self._lock:
            rows, self._rows = self._rows, defaultdict(self._zero)
        if not rows:
            return
        try:
            service_stats_add(rows=[{"rental_id": r, "port_name": p, **row} for (r, p), row in rows.items()])
        except Exception:
            with self._lock:
                for key, row in rows.items():
                    mine = self._rows[key]
                    for name, value in row.items():
                        mine[name] = max(mine[name], value) if name == "latency_ms_max" else mine[name] + value
            raise
