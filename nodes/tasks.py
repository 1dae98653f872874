"""Celery tasks of the nodes app (thin wrappers over services)."""

from celery import shared_task
from django.db import OperationalError

from nodes.availability import availability_schedules_push
from nodes.services import node_mark_stale_offline


@shared_task(
    name="nodes.node_mark_stale_offline",
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    retry_backoff_max=30,
    max_retries=3,
    acks_late=True,
)
def node_mark_stale_offline_task() -> list[int]:
    """Move nodes whose heartbeats stopped offline; return their ids."""
    return node_mark_stale_offline()


@shared_task(name="nodes.availability_schedules_push", autoretry_for=(OperationalError,), max_retries=3)
def availability_schedules_push_task() -> list[int]:
    """Tell the agents of scheduled nodes whose window opened or closed; return their ids."""
    return availability_schedules_push()
