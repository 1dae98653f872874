"""Database: SQLite in the embedded default, PostgreSQL (psycopg 3) when DATABASE_URL is set.

Real mode has two connection policies, chosen per process with DATABASE_POOL:

- pooled (the web tier, which `scripts/serve.sh` starts with DATABASE_POOL=1): psycopg's pool through
  Django's OPTIONS["pool"], at most DATABASE_POOL_MAX_SIZE connections per process, and CONN_MAX_AGE=0
  (Django requires it with a pool) so every request hands its connection back when it ends. Under ASGI
  each request runs its sync code on a thread of its own; persistent connections would stay behind in
  those threads, one per request, until PostgreSQL runs out.
- persistent (Celery workers, the agent gateway, management commands): one connection per thread kept
  for DATABASE_CONN_MAX_AGE seconds. These processes have a fixed number of threads, so the number of
  connections is bounded by it.
"""

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .base import VAR_DIR
from .env import env_bool, env_int, env_str

DATABASE_URL = env_str("DATABASE_URL")
DATABASE_POOL = env_bool("DATABASE_POOL", default=False)
# Connections each pooled process opens at start and keeps, and the most it may hold at once.
DATABASE_POOL_MIN_SIZE = env_int("DATABASE_POOL_MIN_SIZE", 2)
DATABASE_POOL_MAX_SIZE = env_int("DATABASE_POOL_MAX_SIZE", 8)
# Seconds a request waits for a free pooled connection before it fails instead of queueing on.
DATABASE_POOL_TIMEOUT = env_int("DATABASE_POOL_TIMEOUT", 10)

if DATABASE_URL:
    if DATABASE_POOL:
        if not 0 <= DATABASE_POOL_MIN_SIZE <= DATABASE_POOL_MAX_SIZE or DATABASE_POOL_MAX_SIZE < 1:
            raise ImproperlyConfigured(
                f"DATABASE_POOL_MIN_SIZE={DATABASE_POOL_MIN_SIZE} and DATABASE_POOL_MAX_SIZE="
                f"{DATABASE_POOL_MAX_SIZE}: need 0 <= min <= max and max >= 1."
            )
        if DATABASE_POOL_TIMEOUT < 1:
            raise ImproperlyConfigured(f"DATABASE_POOL_TIMEOUT={DATABASE_POOL_TIMEOUT}: need at least 1 second.")
        _default = dj_database_url.parse(DATABASE_URL, conn_max_age=0, conn_health_checks=True)
        _default.setdefault("OPTIONS", {})["pool"] = {
            "min_size": DATABASE_POOL_MIN_SIZE,
            "max_size": DATABASE_POOL_MAX_SIZE,
            "timeout": DATABASE_POOL_TIMEOUT,
            # Recycle connections now and then so server-side memory does not grow without end.
            "max_lifetime": 1800,
            "max_idle": 300,
        }
    else:
        _default = dj_database_url.parse(
            DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60), conn_health_checks=True
        )
    # Shown in pg_stat_activity, so an operator (and the tests) can count each tier's connections.
    _application_name = env_str("DATABASE_APPLICATION_NAME")
    if _application_name:
        _default.setdefault("OPTIONS", {})["application_name"] = _application_name
    DATABASES = {"default": _default}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "janction.sqlite3",
            # SQLite serialises writers; wait for the lock instead of failing at once.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }
