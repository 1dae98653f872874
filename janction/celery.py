"""The Celery application (eager in the embedded default, Redis-backed in real mode)."""

import os
import time

from celery import Celery
from celery.signals import task_postrun, task_prerun

from janction.instruments import CELERY_TASK_DURATION, CELERY_TASKS

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "janction.settings")

app = Celery("janction")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# -- Metrics (docs/metrics.md): each finished task counted by name and outcome, and timed ----------------------

_started: dict[str, float] = {}


@task_prerun.connect(dispatch_uid="janction.metrics.task_prerun")
def _task_started(task_id=None, **kwargs) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


@task_postrun.connect(dispatch_uid="janction.metrics.task_postrun")
def _task_finished(task_id=None, task=None, state=None, **kwargs) -> None:
    started = _started.pop(task_id, None)
    name = getattr(task, "name", None) or "unknown"
    CELERY_TASKS.labels(name, (state or "unknown").lower()).inc()
    if started is not None:
        CELERY_TASK_DURATION.labels(name).observe(time.perf_counter() - started)
