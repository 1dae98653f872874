"""Proof-of-Contribution epochs as this app counts them: POC_EPOCH_SECONDS long, aligned to the Unix epoch."""

from datetime import UTC, datetime, timedelta

from django.conf import settings


def epoch_bounds(*, moment: datetime) -> tuple[datetime, datetime]:
    """Return the [start, end) of the epoch containing ``moment`` (the PoC's own alignment)."""
    length = settings.POC_EPOCH_SECONDS
    start = datetime.fromtimestamp(int(moment.timestamp()) // length * length, tz=UTC)
    return start, start + timedelta(seconds=length)
