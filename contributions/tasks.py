"""Celery tasks of data contributions."""

from celery import shared_task

from contributions.review import contribution_review_run


@shared_task(name="contributions.review_pending")
def review_pending() -> dict:
    """Run the automatic checks on pending records not checked yet."""
    return contribution_review_run()
