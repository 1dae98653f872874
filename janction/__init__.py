"""Janction: a marketplace that pools idle GPUs into vGPUs and rents them out."""

from .recursion import recursion_limit_restore

recursion_limit_restore()

from .celery import app as celery_app  # noqa: E402

__all__ = ("celery_app",)
