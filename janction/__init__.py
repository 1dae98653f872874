"""Janction: a marketplace that pools idle GPUs into vGPUs and rents them out."""

from .celery import app as celery_app

__all__ = ("celery_app",)
