"""Timestamped container log lines: parsing and resuming after a cursor."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from agent.runtime.base import LogLine, RuntimeEvents

log = logging.getLogger(__name__)

NANOS = 1_000_000_000


def parse_timestamp_ns(text: str) -> int | None:
    """Return Unix nanoseconds of an RFC 3339 timestamp such as 2026-01-02T03:04:05.123456789Z."""
    head, dot, rest = text.partition(".")
    fraction = ""
    zone = rest
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction, zone = rest[:digits], rest[digits:]
    try:
        moment = datetime.fromisoformat(head + (zone if zone != "Z" else "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp()) * NANOS + int((fraction + "000000000")[:9])


def format_timestamp_ns(value: int) -> str:
    """Return an RFC 3339 UTC timestamp with nanoseconds."""
    seconds, nanos = divmod(value, NANOS)
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def timestamp_ms(text: str) -> int:
    """Return Unix milliseconds of an RFC 3339 time, or 0 for an empty or zero ("0001-01-01...") time."""
    nanos = parse_timestamp_ns(text) if text else None
    return nanos // 1_000_000 if nanos and nanos > 0 else 0


def split_timestamped(line: str) -> tuple[int | None, str]:
    """Split "<timestamp> <text>" into nanoseconds and text; (None, line) when there is no timestamp."""
    stamp, space, text = line.partition(" ")
    nanos = parse_timestamp_ns(stamp)
    if nanos is None:
        return None, line
    return nanos, text if space else ""


def cursor_ns(cursor: str) -> int:
    """Return the nanoseconds a log cursor names; -1 (before everything) for an empty cursor."""
    return int(cursor) if cursor.isdigit() else -1


class TimestampedLogForwarder:
    """Turn "<timestamp> <text>" lines of one placement into LogLine events, skipping resumed ones.

    When resuming, lines stamped exactly at the cursor are forwarded again: engines may stamp
    several lines alike (podman's Docker API only to the second), and repeating a line beats
    losing one.
    """

    def __init__(self, placement_id: str, events: RuntimeEvents, cursor: str = "") -> None:
        self._placement_id = placement_id
        self._events = events
        self._after = cursor_ns(cursor)

    def forward(self, stream: str, raw: str) -> None:
        """Emit one raw line of `stream` unless it predates the cursor or carries no timestamp."""
        nanos, text = split_timestamped(raw)
        if nanos is None:
            log.warning("engine message for placement %s: %s", self._placement_id, raw)
            return
        if nanos >= self._after:
            self._events.on_log(LogLine(self._placement_id, stream, text, str(nanos)))
