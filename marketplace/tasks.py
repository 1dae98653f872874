"""Celery autodiscovery looks here: the rentals tasks."""

from marketplace.rentals.tasks import metering, placements_sync

__all__ = ["metering", "placements_sync"]
