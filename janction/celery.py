"""The Celery application (eager in the embedded default, Redis-backed in real mode)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "janction.settings")

app = Celery("janction")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
