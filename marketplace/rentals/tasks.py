"""Celery tasks: read the agents' placement reports back and charge usage."""

from celery import shared_task

from marketplace.rentals.dispatch import orphans_stop, rental_logs_stream, rentals_sync
from marketplace.rentals.metering import metering_run
from marketplace.rentals.services import rental_expire_unmatched


@shared_task(name="rentals.placements_sync")
def placements_sync() -> dict:
    """Stream new log lines, apply placement reports, expire unmatched rentals, stop orphans; return counts."""
    logs = rental_logs_stream()
    moved = rentals_sync()
    expired = rental_expire_unmatched()
    orphans = orphans_stop()
    return {"log_lines": logs, "rentals_moved": moved, "expired": len(expired), "orphans_stopped": orphans}


@shared_task(name="rentals.metering_run")
def metering() -> dict:
    """Charge new usage reports in bulk; return counts."""
    result = metering_run()
    return {"reports": result.reports, "postings": result.postings}
